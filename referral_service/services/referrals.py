"""Referral intake and reading: submit, show, list, withdraw consent."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from referral_service.db.models import (
    Assignment,
    CaseNote,
    Deadline,
    IdempotencyKey,
    Referral,
    RoutingDecision,
    Subject,
    new_id,
)
from referral_service.db.session import UnitOfWork
from referral_service.domain import events
from referral_service.domain.commands import SubmitReferral
from referral_service.domain.errors import Conflict, Forbidden, NotFound
from referral_service.domain.model import (
    OPEN_ASSIGNMENT_STATUSES,
    PERSONAL_SUBJECT_FIELDS,
    SCOPE_FIELDS,
    Actor,
    AssignmentStatus,
    ReferralStatus,
    Role,
)
from referral_service.services import duplicates
from referral_service.services.common import (
    clamp_limit,
    decode_cursor,
    encode_cursor,
    for_update,
    must,
    next_counter,
)
from referral_service.services.personal_data import FieldRead

if TYPE_CHECKING:
    from referral_service.services.ports import Services

SUBMITTERS = (Role.CASEWORKER, Role.SUPERVISOR)


@dataclass
class SubmitOutcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False  # the stored answer to an earlier request with the same idempotency key


@dataclass
class _Visibility:
    full: bool
    subject_fields: tuple[str, ...]
    incident: bool
    partner_id: str | None = None


def request_mac(services: Services, payload: dict[str, Any]) -> str:
    """A keyed digest of a request body: compares retries without storing (or hashing bare) personal data."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(services.keys.derive_secret("idempotency"), canonical, sha256).hexdigest()


def idempotency_key_digest(services: Services, key: str) -> str:
    """What is stored for a client's Idempotency-Key: its keyed digest (hex), never the key itself,
    which clients may build from anything, names included."""
    return hmac.new(services.keys.derive_secret("idempotency-key"), key.encode(), sha256).hexdigest()


def submit_referral(
    cmd: SubmitReferral, services: Services, actor: Actor, *, idempotency_key: str | None = None,
    mac: str | None = None,
) -> SubmitOutcome:
    if actor.role not in SUBMITTERS:
        raise Forbidden("only caseworkers and supervisors submit referrals")
    if idempotency_key:
        idempotency_key = idempotency_key_digest(services, idempotency_key)
    for attempt in range(2):
        try:
            with services.uow() as uow:
                if idempotency_key:
                    stored = uow.session.get(IdempotencyKey, (actor.user_id, idempotency_key))
                    if stored is not None:
                        if stored.request_mac != mac:
                            raise Conflict("this Idempotency-Key was already used with a different request")
                        return SubmitOutcome(stored.status_code, stored.response, replayed=True)
                body = _submit(cmd, uow, services, actor)
                if idempotency_key:
                    uow.session.add(IdempotencyKey(user_id=actor.user_id, key=idempotency_key,
                                                   request_mac=mac or "", status_code=201, response=body))
                uow.commit()
                return SubmitOutcome(201, body)
        except IntegrityError:
            # A concurrent retry with the same key committed first: answer as it did.
            if not idempotency_key or attempt:
                raise
    raise AssertionError("unreachable")


def _submit(cmd: SubmitReferral, uow: UnitOfWork, services: Services, actor: Actor) -> dict[str, Any]:
    session, pd, now = uow.session, services.personal_data, services.clock.now()
    # Every referral keeps the person as its caseworker entered them. A CNIC or phone that matches
    # earlier subjects only becomes a question for supervisors (see services.duplicates).
    matches = pd.find_matching_subjects(session, cmd.subject.cnic, cmd.subject.phone)
    subject = pd.create_subject(session, cmd.subject, now)
    number = next_counter(session, f"referral-{now.year}")
    referral = Referral(
        reference=f"VAN-{now.year}-{number:06d}",
        subject_id=subject.id,
        caseworker_id=actor.user_id,
        status=ReferralStatus.SUBMITTED,
        risk_level=cmd.risk_level,
        needs=list(dict.fromkeys(cmd.needs)),
        # The type is free text (people write names into it), so it is sealed with the rest of the
        # incident below; the plaintext column only serves rows written before that.
        incident_type=None,
        staff_sex_preference=cmd.staff_sex_preference or "any",
        consent_given=cmd.consent_given,
        consent_method=cmd.consent_method,
        consent_share=list(dict.fromkeys(cmd.consent_share)) if cmd.consent_given else [],
        consent_recorded_by=actor.user_id,
        consent_recorded_at=now,
        # Kept in the schema for old rows; a referral is never attached to another's subject any more.
        linked_existing_subject=False,
        created_at=now,
        updated_at=now,
    )
    referral.id = new_id()
    if cmd.incident_type or cmd.incident_date or cmd.incident_narrative:
        incident = json.dumps({"type": cmd.incident_type,
                               "date": cmd.incident_date.isoformat() if cmd.incident_date else None,
                               "narrative": cmd.incident_narrative})
        referral.incident_ct = pd.seal(session, subject, "referrals", "incident", referral.id, incident)
    session.add(referral)
    session.flush()  # the possible-duplicate rows refer to it
    warnings = duplicates.record_matches(session, actor, subject, referral, matches, now)
    uow.emit(events.ReferralSubmitted(referral_id=referral.id, subject_id=subject.id,
                                      risk_level=cmd.risk_level, consent_given=cmd.consent_given))
    pd.access.record(actor=actor, action="referral.submit", referral_id=referral.id, subject_id=subject.id)
    routing = ("will be routed to partner organisations" if cmd.consent_given
               else "not routed and not shared with any partner: consent was not given")
    return {"id": referral.id, "reference": referral.reference, "status": referral.status,
            "subject_id": subject.id, "routing": routing, "warnings": warnings}


# -- reading -----------------------------------------------------------------------------------
def _visibility(session: Any, referral: Referral, actor: Actor) -> _Visibility:
    if actor.role == Role.SUPERVISOR or (actor.role == Role.CASEWORKER and referral.caseworker_id == actor.user_id):
        return _Visibility(full=True, subject_fields=PERSONAL_SUBJECT_FIELDS, incident=True)
    if actor.role == Role.PARTNER and actor.partner_id and referral.consent_given \
            and referral.consent_withdrawn_at is None:
        holds = any(a.partner_id == actor.partner_id and a.status in OPEN_ASSIGNMENT_STATUSES
                    for a in referral.assignments)
        if holds:
            scopes = referral.consent_share
            fields = ["sex"] + [f for s in scopes for f in SCOPE_FIELDS.get(s, ()) if f != "incident"]
            return _Visibility(full=False, subject_fields=tuple(dict.fromkeys(fields)),
                               incident="incident" in scopes, partner_id=actor.partner_id)
    raise Forbidden("you may not see this referral")


def load_referral(session: Any, referral_id: str) -> Referral:
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("no such referral")
    return referral


def referral_view(session: Any, services: Services, referral: Referral, actor: Actor) -> dict[str, Any]:
    vis = _visibility(session, referral, actor)
    subject = must(session.get(Subject, referral.subject_id), "subject")
    pd = services.personal_data
    revealed = pd.reveal_subject(session, subject, vis.subject_fields, actor=actor, referral_id=referral.id)
    subject_out: dict[str, Any] = {
        **revealed,
        "province": subject.province,
        "district": subject.district,
        "preferred_language": subject.preferred_language,
        "is_minor": subject.is_minor,
    }
    body: dict[str, Any] = {
        "id": referral.id,
        "reference": referral.reference,
        "status": referral.status,
        "risk_level": referral.risk_level,
        "needs": referral.needs,
        "subject_id": referral.subject_id,
        "subject": subject_out,
        "preferences": {"staff_sex": referral.staff_sex_preference},
        "created_at": referral.created_at,
    }
    if vis.incident:
        incident: dict[str, Any] = {"type": referral.incident_type}
        read = pd.reveal_field_read(session, subject, "referrals", "incident", referral.id,
                                    referral.incident_ct, actor=actor, referral_id=referral.id)
        if read.value is not None:
            incident.update(json.loads(read.value))
        elif read.damaged:
            incident["damaged"] = True
        elif read.erased:
            incident["erased"] = True
        body["incident"] = incident
    assignments = [a for a in referral.assignments if vis.full or a.partner_id == vis.partner_id]
    body["assignments"] = [assignment_view(session, services, a, actor, subject, reveal_notes=True)
                           for a in assignments]
    if actor.role == Role.SUPERVISOR:
        body["linked_referrals"] = duplicates.linked_referrals(session, referral, subject)
    if vis.full:
        body["consent"] = {"given": referral.consent_given, "method": referral.consent_method,
                           "share": referral.consent_share, "recorded_by": referral.consent_recorded_by,
                           "recorded_at": referral.consent_recorded_at,
                           "withdrawn_at": referral.consent_withdrawn_at}
        body["caseworker_id"] = referral.caseworker_id
        body["routing_decisions"] = [
            {"service": d.service, "chosen_partner_id": d.chosen_partner_id, "considered": d.considered,
             "decided_at": d.decided_at}
            for d in session.scalars(select(RoutingDecision).where(RoutingDecision.referral_id == referral.id)
                                     .order_by(RoutingDecision.decided_at))
        ]
    return body


def assignment_view(session: Any, services: Services, a: Assignment, actor: Actor, subject: Subject | None = None,
                    reveal_notes: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": a.id, "referral_id": a.referral_id, "partner_id": a.partner_id, "service": a.service,
        "status": a.status, "offered_at": a.offered_at, "responded_at": a.responded_at, "reasons": a.reasons,
        "decline_reason": a.decline_reason, "close_outcome": a.close_outcome, "closed_at": a.closed_at,
        "services_delivered": a.services_delivered,
    }
    if reveal_notes and subject is not None:
        pd = services.personal_data
        body.update(_note(pd.reveal_field_read(session, subject, "assignments", "note", a.id, a.note_ct,
                                               actor=actor, referral_id=a.referral_id)))
        body["followups"] = [
            {"id": f.id, "outcome": f.outcome, "recorded_at": f.recorded_at, "recorded_by": f.recorded_by,
             **_note(pd.reveal_field_read(session, subject, "followups", "note", f.id, f.note_ct,
                                          actor=actor, referral_id=a.referral_id))}
            for f in a.followups
        ]
    return body


def _note(read: FieldRead) -> dict[str, Any]:
    """A note that does not open reads null and says so; an erased one reads null."""
    return {"note": read.value, "note_damaged": True} if read.damaged else {"note": read.value}


def get_referral(services: Services, referral_id: str, actor: Actor) -> dict[str, Any]:
    with services.uow() as uow:
        referral = load_referral(uow.session, referral_id)
        try:
            return referral_view(uow.session, services, referral, actor)
        except Forbidden:
            services.personal_data.access.record(actor=actor, action="referral.read", referral_id=referral_id,
                                                 outcome="denied")
            raise


def list_referrals(services: Services, actor: Actor, *, status: str | None, limit: int | None,
                   cursor: str | None) -> dict[str, Any]:
    if actor.role not in SUBMITTERS:
        raise Forbidden("only caseworkers and supervisors list referrals")
    limit = clamp_limit(limit)
    query = select(Referral).order_by(Referral.created_at.desc(), Referral.id.desc())
    if actor.role == Role.CASEWORKER:
        query = query.where(Referral.caseworker_id == actor.user_id)
    if status:
        query = query.where(Referral.status == status)
    if cursor:
        at, rid = decode_cursor(cursor)
        query = query.where(or_(Referral.created_at < at, and_(Referral.created_at == at, Referral.id < rid)))
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        items = []
        for r in rows[:limit]:
            subject = must(uow.session.get(Subject, r.subject_id), "subject")
            name = services.personal_data.reveal_subject(uow.session, subject, ["full_name"], actor=actor,
                                                         referral_id=r.id, action="referral.list")
            items.append({
                "id": r.id, "reference": r.reference, "status": r.status, "risk_level": r.risk_level,
                "needs": r.needs, "subject_id": r.subject_id, "created_at": r.created_at,
                "subject": {"full_name": name["full_name"], "erased": name["erased"], "damaged": name["damaged"],
                            "district": subject.district},
                "consent_given": r.consent_given,
                "assignments": [assignment_view(uow.session, services, a, actor) for a in r.assignments],
            })
        nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return {"items": items, "next": nxt}


def withdraw_consent(services: Services, referral_id: str, actor: Actor, note: str | None = None) -> dict[str, Any]:
    with services.uow() as uow:
        referral = _load_for_staff(uow, referral_id, actor)
        if referral.consent_withdrawn_at is not None:
            raise Conflict("consent was already withdrawn")
        now = services.clock.now()
        referral.consent_withdrawn_at = now
        referral.status = ReferralStatus.WITHDRAWN
        withdraw_open_assignments(uow, referral, now, reason="consent_withdrawn")
        _add_note(uow, services, referral, "consent_withdrawn", note, actor, now)
        uow.emit(events.ConsentWithdrawn(referral_id=referral.id))
        services.personal_data.access.record(actor=actor, action="referral.consent_withdraw",
                                             referral_id=referral.id)
        uow.commit()
        return {"id": referral.id, "reference": referral.reference, "status": referral.status,
                "consent_withdrawn_at": now}


def withdraw_open_assignments(uow: UnitOfWork, referral: Referral, now: datetime, *, reason: str) -> None:
    for a in referral.assignments:
        if a.status in OPEN_ASSIGNMENT_STATUSES:
            a.status = AssignmentStatus.WITHDRAWN
            a.closed_at = now
            event = events.AssignmentWithdrawn(referral_id=referral.id, assignment_id=a.id, partner_id=a.partner_id,
                                               service=a.service, reason=reason)
            uow.emit(event)
            uow.deliver_to_partner(event, a.partner_id)
    for d in uow.session.scalars(select(Deadline).where(Deadline.referral_id == referral.id,
                                                         Deadline.status == "pending")):
        d.status = "cancelled"


def _load_for_staff(uow: UnitOfWork, referral_id: str, actor: Actor) -> Referral:
    session = uow.session
    referral = session.scalars(for_update(session, select(Referral).where(Referral.id == referral_id))).first()
    if referral is None:
        raise NotFound("no such referral")
    if not (actor.role == Role.SUPERVISOR
            or (actor.role == Role.CASEWORKER and referral.caseworker_id == actor.user_id)):
        raise Forbidden("only the referral's caseworker or a supervisor may do this")
    return referral


def _add_note(uow: UnitOfWork, services: Services, referral: Referral, kind: str, note: str | None,
              actor: Actor, now: datetime) -> None:
    subject = must(uow.session.get(Subject, referral.subject_id), "subject")
    row = CaseNote(id=new_id(), referral_id=referral.id, kind=kind, author_id=actor.user_id, created_at=now)
    row.note_ct = services.personal_data.seal(uow.session, subject, "case_notes", "note", row.id, note)
    uow.session.add(row)


def withdraw_referral(services: Services, referral_id: str, actor: Actor, note: str | None) -> dict[str, Any]:
    """The caseworker pulls the referral back: open offers are withdrawn, nothing is routed."""
    with services.uow() as uow:
        referral = _load_for_staff(uow, referral_id, actor)
        if referral.status in (ReferralStatus.WITHDRAWN, ReferralStatus.CLOSED):
            raise Conflict(f"the referral is already {referral.status}")
        now = services.clock.now()
        referral.status = ReferralStatus.WITHDRAWN
        withdraw_open_assignments(uow, referral, now, reason="referral_withdrawn")
        _add_note(uow, services, referral, "withdrawn", note, actor, now)
        uow.emit(events.ReferralWithdrawn(referral_id=referral.id))
        services.personal_data.access.record(actor=actor, action="referral.withdraw", referral_id=referral.id)
        uow.commit()
        return {"id": referral.id, "reference": referral.reference, "status": referral.status}


def reopen_referral(services: Services, referral_id: str, actor: Actor, note: str) -> dict[str, Any]:
    """Re-open a withdrawn or unroutable referral (with a note why); it is routed again.

    A closed case stays closed: new needs are a new referral, with its own consent.
    """
    with services.uow() as uow:
        referral = _load_for_staff(uow, referral_id, actor)
        if referral.status not in (ReferralStatus.WITHDRAWN, ReferralStatus.UNROUTABLE):
            raise Conflict(f"the referral is {referral.status}; only a withdrawn or unroutable one re-opens")
        if referral.consent_withdrawn_at is not None or not referral.consent_given:
            raise Conflict("consent was withdrawn or never given; record new consent in a new referral")
        now = services.clock.now()
        referral.status = ReferralStatus.SUBMITTED
        _add_note(uow, services, referral, "reopened", note, actor, now)
        uow.emit(events.ReferralReopened(referral_id=referral.id))
        services.personal_data.access.record(actor=actor, action="referral.reopen", referral_id=referral.id)
        uow.commit()
        return {"id": referral.id, "reference": referral.reference, "status": referral.status}
