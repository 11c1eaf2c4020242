"""Referral intake and reading: submit, show, list; the caseworker's moves: withdraw consent, withdraw, re-open."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.exc import IntegrityError

from referral_service.db.models import (
    Assignment,
    CaseNote,
    IdempotencyKey,
    Referral,
    RoutingDecision,
    Subject,
    new_id,
    utcnow,
)
from referral_service.db.persist import insert_at_commit, insert_now
from referral_service.db.session import UnitOfWork
from referral_service.domain import access, lifecycle
from referral_service.domain.access import Action, Available, Scope
from referral_service.domain.commands import ReopenReferral, SubmitReferral, WithdrawConsent, WithdrawReferral
from referral_service.domain.errors import Conflict, NotFound
from referral_service.domain.model import Actor
from referral_service.services import cases, duplicates
from referral_service.services.authorization import authorize, screen
from referral_service.services.common import (
    clamp_limit,
    decode_cursor,
    encode_cursor,
    must,
    next_counter,
)
from referral_service.services.vault import FieldRead

if TYPE_CHECKING:
    from referral_service.services.ports import Services

# The stored answer of an intake keeps the status the API gave it (a column of idempotency_keys);
# every intake is answered with it.
CREATED = 201


@dataclass
class SubmitOutcome:
    body: dict[str, Any]
    replayed: bool = False  # the stored answer to an earlier request with the same idempotency key


def request_mac(services: Services, payload: dict[str, Any]) -> str:
    """A keyed digest of a request body: compares retries without storing (or hashing bare) personal data."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(services.keys.derive_secret("idempotency"), canonical, sha256).hexdigest()


def idempotency_key_digest(services: Services, key: str) -> str:
    """What is stored for a client's Idempotency-Key: its keyed digest (hex), never the key itself,
    which clients may build from anything, names included."""
    return hmac.new(services.keys.derive_secret("idempotency-key"), key.encode(), sha256).hexdigest()


#: A client's earlier answer under the same Idempotency-Key: built once, no ORM object (every intake asks).
_STORED_ANSWER = select(IdempotencyKey.request_mac, IdempotencyKey.response).where(
    IdempotencyKey.user_id == bindparam("user_id"), IdempotencyKey.key == bindparam("key")
)


def submit_referral(
    services: Services,
    cmd: SubmitReferral,
    actor: Actor,
    *,
    idempotency_key: str | None = None,
    mac: str | None = None,
) -> SubmitOutcome:
    screen(services, actor, Action.SUBMIT_REFERRAL)
    if idempotency_key:
        idempotency_key = idempotency_key_digest(services, idempotency_key)
    for attempt in range(2):
        try:
            with services.uow() as uow:
                if idempotency_key:
                    stored = (
                        uow.session.connection()
                        .execute(_STORED_ANSWER, {"user_id": actor.user_id, "key": idempotency_key})
                        .first()
                    )
                    if stored is not None:
                        if stored.request_mac != mac:
                            raise Conflict("this Idempotency-Key was already used with a different request")
                        return SubmitOutcome(stored.response, replayed=True)
                body = _submit(cmd, uow, services, actor)
                if idempotency_key:
                    insert_at_commit(
                        uow.session,
                        IdempotencyKey,
                        {
                            "user_id": actor.user_id,
                            "key": idempotency_key,
                            "request_mac": mac or "",
                            "status_code": CREATED,
                            "response": body,
                            "created_at": utcnow(),
                        },
                    )
                uow.commit()
                return SubmitOutcome(body)
        except IntegrityError:
            # A concurrent retry with the same key committed first: answer as it did.
            if not idempotency_key or attempt:
                raise
    raise AssertionError("unreachable")


def _submit(cmd: SubmitReferral, uow: UnitOfWork, services: Services, actor: Actor) -> dict[str, Any]:
    session, vault, now = uow.session, services.vault, services.clock.now()
    # Every referral keeps the person as its caseworker entered them. A CNIC or phone that matches
    # earlier subjects only becomes a question for supervisors (see services.duplicates).
    matches = services.matcher.find_matching_subjects(session, cmd.subject.cnic, cmd.subject.phone)
    subject = vault.create_subject(session, cmd.subject, now)
    services.matcher.index_subject(session, subject, cmd.subject.cnic, cmd.subject.phone)
    number = next_counter(session, f"referral-{now.year}")
    change = lifecycle.submit(new_id(), subject.id, cmd, at=now)
    state = change.referral
    referral = Referral(
        id=state.id,
        reference=f"VAN-{now.year}-{number:06d}",
        subject_id=subject.id,
        caseworker_id=actor.user_id,
        status=state.status,
        risk_level=state.risk_level,
        needs=list(state.needs),
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
        # A new referral has none: said here, so reading its case below does not ask the database.
        assignments=[],
    )
    if cmd.incident_type or cmd.incident_date or cmd.incident_narrative:
        incident = json.dumps(
            {
                "type": cmd.incident_type,
                "date": cmd.incident_date.isoformat() if cmd.incident_date else None,
                "narrative": cmd.incident_narrative,
            }
        )
        referral.incident_ct = vault.seal(session, subject, "referrals", "incident", referral.id, incident)
    # Written at once (db.persist), so the possible-duplicate rows below can refer to it.
    insert_now(session, referral)
    warnings = duplicates.record_matches(services, session, actor, subject, referral, matches, now)
    authorize(
        services,
        actor,
        Action.SUBMIT_REFERRAL,
        cases.case_for_reading(referral),
        referral_id=referral.id,
        subject_id=subject.id,
    )
    cases.emit(uow, change.events)
    routing = (
        "will be routed to partner organisations"
        if cmd.consent_given
        else "not routed and not shared with any partner: consent was not given"
    )
    return {
        "id": referral.id,
        "reference": referral.reference,
        "status": referral.status,
        "subject_id": subject.id,
        "routing": routing,
        "warnings": warnings,
    }


# -- reading -----------------------------------------------------------------------------------
def load_referral(session: Any, referral_id: str) -> Referral:
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("no such referral")
    return referral


def referral_view(
    session: Any, services: Services, referral: Referral, actor: Actor, vis: access.Visibility
) -> dict[str, Any]:
    subject = must(session.get(Subject, referral.subject_id), "subject")
    vault = services.vault
    revealed = vault.reveal_subject(session, subject, vis.subject_fields, actor=actor, referral_id=referral.id)
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
        read = vault.reveal_field_read(
            session,
            subject,
            "referrals",
            "incident",
            referral.id,
            referral.incident_ct,
            actor=actor,
            referral_id=referral.id,
        )
        if read.value is not None:
            incident.update(json.loads(read.value))
        elif read.damaged:
            incident["damaged"] = True
        elif read.erased:
            incident["erased"] = True
        body["incident"] = incident
    assignments = [a for a in referral.assignments if vis.partner_id is None or a.partner_id == vis.partner_id]
    body["assignments"] = [
        assignment_view(session, services, a, actor, subject, reveal_notes=True) for a in assignments
    ]
    if vis.linked_referrals:
        body["linked_referrals"] = duplicates.linked_referrals(session, referral, subject)
    if vis.case_file:
        body["consent"] = {
            "given": referral.consent_given,
            "method": referral.consent_method,
            "share": referral.consent_share,
            "recorded_by": referral.consent_recorded_by,
            "recorded_at": referral.consent_recorded_at,
            "withdrawn_at": referral.consent_withdrawn_at,
        }
        body["caseworker_id"] = referral.caseworker_id
        body["routing_decisions"] = [
            {
                "service": d.service,
                "chosen_partner_id": d.chosen_partner_id,
                "considered": d.considered,
                "decided_at": d.decided_at,
            }
            for d in session.scalars(
                select(RoutingDecision)
                .where(RoutingDecision.referral_id == referral.id)
                .order_by(RoutingDecision.decided_at)
            )
        ]
    return body


def assignment_view(
    session: Any,
    services: Services,
    a: Assignment,
    actor: Actor,
    subject: Subject | None = None,
    reveal_notes: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": a.id,
        "referral_id": a.referral_id,
        "partner_id": a.partner_id,
        "service": a.service,
        "status": a.status,
        "offered_at": a.offered_at,
        "responded_at": a.responded_at,
        "reasons": a.reasons,
        "decline_reason": a.decline_reason,
        "close_outcome": a.close_outcome,
        "closed_at": a.closed_at,
        "services_delivered": a.services_delivered,
    }
    if reveal_notes and subject is not None:
        vault = services.vault
        body.update(
            _note(
                vault.reveal_field_read(
                    session, subject, "assignments", "note", a.id, a.note_ct, actor=actor, referral_id=a.referral_id
                )
            )
        )
        body["followups"] = [
            {
                "id": f.id,
                "outcome": f.outcome,
                "recorded_at": f.recorded_at,
                "recorded_by": f.recorded_by,
                **_note(
                    vault.reveal_field_read(
                        session, subject, "followups", "note", f.id, f.note_ct, actor=actor, referral_id=a.referral_id
                    )
                ),
            }
            for f in a.followups
        ]
    return body


def _note(read: FieldRead) -> dict[str, Any]:
    """A note that does not open reads null and says so; an erased one reads null."""
    return {"note": read.value, "note_damaged": True} if read.damaged else {"note": read.value}


def get_referral(services: Services, referral_id: str, actor: Actor) -> dict[str, Any]:
    # A role that may read no referral is refused before the lookup: its answer says nothing about
    # whether the id exists.
    screen(services, actor, Action.READ_REFERRAL)
    with services.uow() as uow:
        referral = load_referral(uow.session, referral_id)
        case = cases.case_for_reading(referral)
        # With the subject: a refused look at a person's file belongs in that person's access report.
        decision = authorize(
            services, actor, Action.READ_REFERRAL, case, referral_id=referral.id, subject_id=referral.subject_id
        )
        view = referral_view(uow.session, services, referral, actor, access.visibility(decision, actor, case))
        uow.commit()  # the read is on record before anyone sees it
        return view


def available_actions(services: Services, referral_id: str, actor: Actor) -> Available:
    """Which actions to offer on the referral's page: those the policy allows and the state machine
    would take now. Not a decision on any call (each is decided again, and recorded, when asked)."""
    with services.uow() as uow:
        referral = load_referral(uow.session, referral_id)
        return access.available(actor, cases.state_of(referral), cases.case_for_reading(referral))


def list_referrals(
    services: Services, actor: Actor, *, status: str | None, limit: int | None, cursor: str | None
) -> dict[str, Any]:
    decision = authorize(services, actor, Action.LIST_REFERRALS)
    limit = clamp_limit(limit)
    query = select(Referral).order_by(Referral.created_at.desc(), Referral.id.desc())
    if decision.scope is Scope.OWN:
        query = query.where(Referral.caseworker_id == actor.user_id)
    if status:
        query = query.where(Referral.status == status)
    if cursor:
        at, rid = decode_cursor(cursor)
        query = query.where(or_(Referral.created_at < at, and_(Referral.created_at == at, Referral.id < rid)))
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        subjects = services.vault.load_subjects(uow.session, [r.subject_id for r in rows[:limit]])
        items = []
        for r in rows[:limit]:
            subject = must(subjects.get(r.subject_id), "subject")
            name = services.vault.reveal_subject(
                uow.session, subject, ["full_name"], actor=actor, referral_id=r.id, action="referral.list"
            )
            items.append(
                {
                    "id": r.id,
                    "reference": r.reference,
                    "status": r.status,
                    "risk_level": r.risk_level,
                    "needs": r.needs,
                    "subject_id": r.subject_id,
                    "created_at": r.created_at,
                    "subject": {
                        "full_name": name["full_name"],
                        "erased": name["erased"],
                        "damaged": name["damaged"],
                        "district": subject.district,
                    },
                    "consent_given": r.consent_given,
                    "assignments": [assignment_view(uow.session, services, a, actor) for a in r.assignments],
                }
            )
        nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        uow.commit()  # the reveals' audit entries
        return {"items": items, "next": nxt}


# -- the caseworker's (or a supervisor's) moves ------------------------------------------------------------
_NOTE_KINDS = {WithdrawConsent: "consent_withdrawn", WithdrawReferral: "withdrawn", ReopenReferral: "reopened"}


def _case_move(services: Services, cmd: WithdrawConsent | WithdrawReferral | ReopenReferral, actor: Actor) -> Referral:
    """Load and lock the referral, ask the policy, then the state machine; save, note, emit."""
    screen(services, actor, access.COMMAND_ACTIONS[type(cmd)])  # before the lookup: no existence oracle
    with services.uow() as uow:
        referral = cases.lock_referral(uow.session, cmd.referral_id)
        authorize(
            services,
            actor,
            access.COMMAND_ACTIONS[type(cmd)],
            cases.case_for_reading(referral),
            referral_id=referral.id,
            subject_id=referral.subject_id,
        )
        now = services.clock.now()
        change = lifecycle.handle(cases.state_of(referral), cmd, at=now, policy=services.deadline_policy)
        cases.save(uow, services, referral, change, now)
        _add_note(uow, services, referral, _NOTE_KINDS[type(cmd)], cmd.note, actor, now)
        uow.commit()
        return referral


def withdraw_consent(services: Services, cmd: WithdrawConsent, actor: Actor) -> Referral:
    """Partners lose access at once and open offers are pulled back; a closed case stays closed."""
    return _case_move(services, cmd, actor)


def withdraw_referral(services: Services, cmd: WithdrawReferral, actor: Actor) -> Referral:
    """The caseworker pulls the referral back: open offers are withdrawn, nothing is routed."""
    return _case_move(services, cmd, actor)


def reopen_referral(services: Services, cmd: ReopenReferral, actor: Actor) -> Referral:
    """Re-open a withdrawn or unroutable referral (with a note why); it is routed again."""
    return _case_move(services, cmd, actor)


def _add_note(
    uow: UnitOfWork, services: Services, referral: Referral, kind: str, note: str | None, actor: Actor, now: datetime
) -> None:
    subject = must(uow.session.get(Subject, referral.subject_id), "subject")
    row = CaseNote(id=new_id(), referral_id=referral.id, kind=kind, author_id=actor.user_id, created_at=now)
    row.note_ct = services.vault.seal(uow.session, subject, "case_notes", "note", row.id, note)
    uow.session.add(row)
