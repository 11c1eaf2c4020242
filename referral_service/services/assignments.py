"""The partner side: inbox, accept, decline, follow-up, close; and routing onward."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm.exc import StaleDataError

from referral_service.db.models import (
    Assignment,
    Deadline,
    FollowUp,
    Partner,
    Referral,
    RoutingDecision,
    Subject,
    new_id,
)
from referral_service.db.session import UnitOfWork
from referral_service.domain import events
from referral_service.domain.commands import CloseAssignment, DeclineAssignment, RecordFollowUp
from referral_service.domain.errors import Conflict, Forbidden, NotFound
from referral_service.domain.model import OPEN_ASSIGNMENT_STATUSES, Actor, AssignmentStatus, ReferralStatus, Role
from referral_service.domain.routing import CaseProfile, PartnerProfile, route_referral
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor, for_update, must
from referral_service.services.referrals import assignment_view

if TYPE_CHECKING:
    from referral_service.services.ports import Services


def inbox(services: Services, actor: Actor, *, status: str | None, limit: int | None,
          cursor: str | None) -> dict[str, Any]:
    if actor.role not in (Role.PARTNER, Role.SUPERVISOR):
        raise Forbidden("the assignment inbox is for partner staff and supervisors")
    limit = clamp_limit(limit)
    query = select(Assignment).order_by(Assignment.offered_at.desc(), Assignment.id.desc())
    if actor.role == Role.PARTNER:
        query = query.where(Assignment.partner_id == actor.partner_id)
    if status:
        query = query.where(Assignment.status == status)
    if cursor:
        at, aid = decode_cursor(cursor)
        query = query.where(or_(Assignment.offered_at < at, and_(Assignment.offered_at == at, Assignment.id < aid)))
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        # No personal field is shown here, but a person whose data key does not open is marked, so
        # the partner knows before opening the case.
        damaged = services.personal_data.damaged_subjects(uow.session, _subjects_of(uow.session, rows[:limit]))
        items = []
        for a in rows[:limit]:
            view = assignment_view(uow.session, services, a, actor)
            view["risk_level"] = a.referral.risk_level
            view["reference"] = a.referral.reference
            view["subject_damaged"] = a.referral.subject_id in damaged
            items.append(view)
        nxt = encode_cursor(rows[limit - 1].offered_at, rows[limit - 1].id) if len(rows) > limit else None
        return {"items": items, "next": nxt}


def _subjects_of(session: Any, rows: Sequence[Assignment]) -> list[Subject]:
    ids = {a.referral.subject_id for a in rows}
    return list(session.scalars(select(Subject).where(Subject.id.in_(ids)))) if ids else []


def _load_for_partner(uow: UnitOfWork, assignment_id: str, actor: Actor, *, supervisor_ok: bool = False) -> Assignment:
    session = uow.session
    a = session.scalars(for_update(session, select(Assignment).where(Assignment.id == assignment_id))).first()
    if a is None:
        raise NotFound("no such assignment")
    if actor.role == Role.SUPERVISOR and supervisor_ok:
        return a
    if actor.role != Role.PARTNER or actor.partner_id != a.partner_id:
        raise Forbidden("only the assigned partner may do this")
    return a


def _commit(uow: UnitOfWork) -> None:
    try:
        uow.commit()
    except StaleDataError:
        raise Conflict("the assignment was changed by someone else at the same time; reload it") from None


def _meet_deadlines(session: Any, assignment_id: str, kinds: tuple[str, ...]) -> None:
    for d in session.scalars(select(Deadline).where(Deadline.assignment_id == assignment_id,
                                                     Deadline.status.in_(("pending", "overdue")),
                                                     Deadline.kind.in_(kinds))):
        d.status = "met"


def _add_deadline(services: Services, session: Any, a: Assignment, kind: str, now: datetime) -> Deadline:
    policy = services.deadline_policy.for_risk(a.referral.risk_level)
    delay = {"accept": policy.accept, "first_contact": policy.first_contact, "followup": policy.followup_every}[kind]
    deadline = Deadline(referral_id=a.referral_id, assignment=a, partner_id=a.partner_id, kind=kind,
                        risk_level=a.referral.risk_level, due_at=now + delay)
    session.add(deadline)
    return deadline


def _record_response(session: Any, a: Assignment, now: datetime, accepted: bool) -> None:
    partner = session.get(Partner, a.partner_id)
    if partner is not None:
        # Increments in SQL, not Python: staff of one partner answering different offers at once
        # would otherwise overwrite each other's counts.
        partner.responses = Partner.responses + 1
        partner.response_seconds_total = (
            Partner.response_seconds_total + int((now - a.offered_at).total_seconds()))
        if accepted:
            partner.offers_accepted = Partner.offers_accepted + 1


def accept(services: Services, assignment_id: str, actor: Actor) -> dict[str, Any]:
    with services.uow() as uow:
        a = _load_for_partner(uow, assignment_id, actor)
        if a.status != AssignmentStatus.OFFERED:
            raise Conflict(f"the assignment is {a.status}, not offered")
        now = services.clock.now()
        a.status, a.responded_at = AssignmentStatus.ACCEPTED, now
        _record_response(uow.session, a, now, accepted=True)
        a.referral.status = ReferralStatus.ASSIGNED
        _meet_deadlines(uow.session, a.id, ("accept",))
        _add_deadline(services, uow.session, a, "first_contact", now)
        uow.emit(events.AssignmentAccepted(referral_id=a.referral_id, assignment_id=a.id, partner_id=a.partner_id,
                                           service=a.service))
        services.personal_data.access.record(actor=actor, action="assignment.accept", referral_id=a.referral_id)
        _commit(uow)
        return assignment_view(uow.session, services, a, actor)


def decline(services: Services, cmd: DeclineAssignment, actor: Actor) -> dict[str, Any]:
    with services.uow() as uow:
        a = _load_for_partner(uow, cmd.assignment_id, actor)
        if a.status not in OPEN_ASSIGNMENT_STATUSES:
            raise Conflict(f"the assignment is {a.status}; only an open assignment can be declined")
        now = services.clock.now()
        if a.status == AssignmentStatus.OFFERED:
            _record_response(uow.session, a, now, accepted=False)
        a.status, a.responded_at, a.decline_reason = AssignmentStatus.DECLINED, now, cmd.reason
        subject = must(uow.session.get(Subject, a.referral.subject_id), "subject")
        a.note_ct = services.personal_data.seal(uow.session, subject, "assignments", "note", a.id, cmd.note)
        _meet_deadlines(uow.session, a.id, ("accept", "first_contact", "followup"))
        uow.emit(events.AssignmentDeclined(referral_id=a.referral_id, assignment_id=a.id, partner_id=a.partner_id,
                                           service=a.service, reason=cmd.reason))
        services.personal_data.access.record(actor=actor, action="assignment.decline", referral_id=a.referral_id)
        _commit(uow)
        return assignment_view(uow.session, services, a, actor)


def record_followup(services: Services, cmd: RecordFollowUp, actor: Actor) -> dict[str, Any]:
    with services.uow() as uow:
        a = _load_for_partner(uow, cmd.assignment_id, actor)
        if a.status != AssignmentStatus.ACCEPTED:
            raise Conflict(f"the assignment is {a.status}; accept it before recording follow-ups")
        now = services.clock.now()
        subject = must(uow.session.get(Subject, a.referral.subject_id), "subject")
        followup = FollowUp(assignment_id=a.id, referral_id=a.referral_id, outcome=cmd.outcome,
                            recorded_by=actor.user_id, recorded_at=now)
        followup.id = new_id()
        followup.note_ct = services.personal_data.seal(uow.session, subject, "followups", "note", followup.id, cmd.note)
        uow.session.add(followup)
        _meet_deadlines(uow.session, a.id, ("first_contact", "followup"))
        _add_deadline(services, uow.session, a, "followup", now)
        uow.emit(events.FollowUpRecorded(referral_id=a.referral_id, assignment_id=a.id, followup_id=followup.id,
                                         outcome=cmd.outcome))
        services.personal_data.access.record(actor=actor, action="followup.record", referral_id=a.referral_id)
        _commit(uow)
        return {"id": followup.id, "assignment_id": a.id, "outcome": followup.outcome, "recorded_at": now}


def close(services: Services, cmd: CloseAssignment, actor: Actor) -> dict[str, Any]:
    with services.uow() as uow:
        a = _load_for_partner(uow, cmd.assignment_id, actor, supervisor_ok=True)
        if a.status not in OPEN_ASSIGNMENT_STATUSES:
            raise Conflict(f"the assignment is {a.status}; only an open assignment can be closed")
        now = services.clock.now()
        subject = must(uow.session.get(Subject, a.referral.subject_id), "subject")
        a.status, a.close_outcome, a.closed_at = AssignmentStatus.CLOSED, cmd.outcome, now
        a.services_delivered = list(dict.fromkeys(cmd.services_delivered))
        a.note_ct = services.personal_data.seal(uow.session, subject, "assignments", "note", a.id, cmd.note)
        _meet_deadlines(uow.session, a.id, ("accept", "first_contact", "followup"))
        uow.emit(events.AssignmentClosed(referral_id=a.referral_id, assignment_id=a.id, partner_id=a.partner_id,
                                         service=a.service, outcome=cmd.outcome))
        referral = a.referral
        if not any(x.status in OPEN_ASSIGNMENT_STATUSES for x in referral.assignments if x.id != a.id) \
                and set(referral.needs) <= {x.service for x in referral.assignments
                                            if x.status == AssignmentStatus.CLOSED}:
            referral.status = ReferralStatus.CLOSED
            uow.emit(events.ReferralClosed(referral_id=referral.id))
        services.personal_data.access.record(actor=actor, action="assignment.close", referral_id=a.referral_id)
        _commit(uow)
        return assignment_view(uow.session, services, a, actor)


# -- routing (run by the router worker) ----------------------------------------------------------
def _partner_profiles(session: Any) -> list[PartnerProfile]:
    open_counts = dict(session.execute(
        select(Assignment.partner_id, func.count()).where(Assignment.status.in_(OPEN_ASSIGNMENT_STATUSES))
        .group_by(Assignment.partner_id)
    ).all())
    return [
        PartnerProfile(
            id=p.id, name=p.name, services=p.services, provinces=p.provinces, districts=p.districts,
            languages=p.languages, capacity=p.capacity, open_assignments=int(open_counts.get(p.id, 0)),
            accepts_minors=p.accepts_minors, staff_sex=p.staff_sex, active=p.active,
            offers_made=p.offers_made, offers_accepted=p.offers_accepted,
            mean_response_hours=(p.response_seconds_total / p.responses / 3600) if p.responses else None,
        )
        for p in session.scalars(select(Partner).where(Partner.active.is_(True)).order_by(Partner.id))
    ]


def route_open_needs(uow: UnitOfWork, services: Services, referral_id: str) -> list[str]:
    """Offer every needed service that has no open or finished assignment to the best partner left.

    Safe to run again for the same referral: it looks at state, not at the event that woke it.
    Returns the ids of the assignments it offered; raises NotFound for an unknown referral.
    """
    session = uow.session
    referral = session.scalars(for_update(session, select(Referral).where(Referral.id == referral_id))).first()
    if referral is None:
        raise NotFound("no such referral")
    if not referral.consent_given or referral.consent_withdrawn_at is not None \
            or referral.status in (ReferralStatus.WITHDRAWN, ReferralStatus.CLOSED):
        return []
    subject = must(session.get(Subject, referral.subject_id), "subject")
    now = services.clock.now()
    partners: list[PartnerProfile] | None = None
    offered: list[str] = []
    unroutable: list[str] = []
    for service in referral.needs:
        mine = [a for a in referral.assignments if a.service == service]
        if any(a.status in (*OPEN_ASSIGNMENT_STATUSES, AssignmentStatus.CLOSED) for a in mine):
            continue
        if partners is None:
            partners = _partner_profiles(session)
        case = CaseProfile(referral_id=referral.id, service=service, province=subject.province,
                           district=subject.district, language=subject.preferred_language,
                           is_minor=subject.is_minor, staff_sex_preference=referral.staff_sex_preference)
        # A partner that declined or let the offer lapse is not asked again; one whose offer was
        # withdrawn by the caseworker may be, if the referral is re-opened.
        tried = {a.partner_id for a in mine if a.status in (AssignmentStatus.DECLINED, AssignmentStatus.EXPIRED)}
        while True:
            result = route_referral(case, partners, tried)
            if result.chosen is None:
                break
            # Competing routers counted loads before either committed: lock the chosen partner
            # and count again, so two routers can never both fill its last place.
            partner_row = session.scalars(for_update(session, select(Partner).where(Partner.id == result.chosen.id))
                                          .execution_options(populate_existing=True)).one()
            open_now = int(session.scalar(select(func.count()).select_from(Assignment).where(
                Assignment.partner_id == partner_row.id, Assignment.status.in_(OPEN_ASSIGNMENT_STATUSES))) or 0)
            if open_now < partner_row.capacity:
                break
            partners = [p if p.id != partner_row.id else
                        PartnerProfile(**{**p.__dict__, "open_assignments": open_now}) for p in partners]
        session.add(RoutingDecision(referral_id=referral.id, service=service,
                                    chosen_partner_id=result.chosen.id if result.chosen else None,
                                    considered=[c.to_json() for c in result.considered], decided_at=now))
        if result.chosen is None:
            unroutable.append(service)
            continue
        a = Assignment(referral_id=referral.id, partner_id=result.chosen.id, service=service,
                       status=AssignmentStatus.OFFERED, reasons=result.chosen_reasons, offered_at=now)
        a.id = new_id()
        a.referral = referral
        session.add(a)
        partner_row.offers_made = Partner.offers_made + 1  # in SQL: no lost counts
        deadline = _add_deadline(services, session, a, "accept", now)
        partners = [p if p.id != result.chosen.id else
                    PartnerProfile(**{**p.__dict__, "open_assignments": p.open_assignments + 1}) for p in partners]
        event = events.AssignmentOffered(referral_id=referral.id, assignment_id=a.id, partner_id=a.partner_id,
                                         service=service, risk_level=referral.risk_level,
                                         accept_by=deadline.due_at.isoformat())
        uow.emit(event)
        uow.deliver_to_partner(event, a.partner_id)
        offered.append(a.id)
    has_open = any(a.status in OPEN_ASSIGNMENT_STATUSES for a in referral.assignments)
    has_accepted = any(a.status == AssignmentStatus.ACCEPTED for a in referral.assignments)
    if has_accepted:
        referral.status = ReferralStatus.ASSIGNED
    elif has_open:
        referral.status = ReferralStatus.ROUTING
    elif unroutable:
        referral.status = ReferralStatus.UNROUTABLE
    if offered:
        uow.emit(events.ReferralRouted(referral_id=referral.id, assignment_ids=offered))
    if unroutable:
        uow.emit(events.ReferralUnroutable(referral_id=referral.id, services=unroutable))
    return offered
