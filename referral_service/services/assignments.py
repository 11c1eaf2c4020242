"""The partner side: inbox, accept, decline, follow-up, close; and routing onward."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from referral_service.db.models import (
    Assignment,
    Deadline,
    FollowUp,
    Partner,
    Referral,
    RoutingDecision,
    Subject,
    User,
    new_id,
)
from referral_service.db.persist import insert_at_commit, insert_now
from referral_service.db.session import UnitOfWork, transaction_info
from referral_service.domain import access, lifecycle
from referral_service.domain.access import Action, Scope
from referral_service.domain.commands import (
    AcceptAssignment,
    CloseAssignment,
    DeclineAssignment,
    OfferAssignment,
    RecordFollowUp,
)
from referral_service.domain.errors import Conflict
from referral_service.domain.lifecycle import ReferralState
from referral_service.domain.model import OPEN_ASSIGNMENT_STATUSES, Actor, AssignmentStatus, DeadlineStatus
from referral_service.domain.routing import CaseProfile, PartnerProfile, RoutingResult, route_referral
from referral_service.services import cases
from referral_service.services.authorization import authorize, screen
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor, for_update, must
from referral_service.services.referrals import assignment_view

if TYPE_CHECKING:
    from referral_service.services.ports import Services


def inbox(
    services: Services,
    actor: Actor,
    *,
    status: str | None,
    limit: int | None,
    cursor: str | None,
    visit: bool = False,
) -> dict[str, Any]:
    """The actor's assignments, newest first. `visit` (the web inbox): each item also says what is new
    since the user's last visit (`news`), and `last_visit` is when that was. Opening the first page is a
    new visit; the older pages belong to the same one. API calls are no visit (a partner's system
    polling must not hide news from its staff)."""
    decision = authorize(services, actor, Action.LIST_ASSIGNMENTS)
    limit = clamp_limit(limit)
    query = select(Assignment).order_by(Assignment.offered_at.desc(), Assignment.id.desc())
    if decision.scope is Scope.OWN:
        query = query.where(Assignment.partner_id == actor.partner_id)
    if status:
        query = query.where(Assignment.status == status)
    if cursor:
        at, aid = decode_cursor(cursor)
        query = query.where(or_(Assignment.offered_at < at, and_(Assignment.offered_at == at, Assignment.id < aid)))
    with services.uow() as uow:
        since = _visit(uow.session, actor, services.clock.now(), new=cursor is None) if visit else None
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        # No personal field is shown here, but a person whose data key does not open is marked, so
        # the partner knows before opening the case.
        damaged = services.vault.damaged_subjects(uow.session, _subjects_of(uow.session, rows[:limit]))
        next_deadlines = _next_deadlines(uow.session, [a.id for a in rows[:limit]])
        items = []
        for a in rows[:limit]:
            view = assignment_view(uow.session, services, a, actor)
            view["risk_level"] = a.referral.risk_level
            view["reference"] = a.referral.reference
            view["subject_damaged"] = a.referral.subject_id in damaged
            view["next_deadline"] = next_deadlines.get(a.id)
            if visit:
                view["news"] = lifecycle.news_since(a.status, a.offered_at, a.responded_at, a.closed_at, since)
            items.append(view)
        nxt = encode_cursor(rows[limit - 1].offered_at, rows[limit - 1].id) if len(rows) > limit else None
        uow.commit()
        result: dict[str, Any] = {"items": items, "next": nxt}
        if visit:
            result["last_visit"] = since
        return result


def _visit(session: Session, actor: Actor, now: datetime, *, new: bool) -> datetime | None:
    """When the user's previous visit was; a new visit moves the marks on."""
    user = session.get(User, actor.user_id)
    if user is None:
        return None
    if not new:
        return user.inbox_seen_before
    user.inbox_seen_before, user.inbox_seen_at = user.inbox_seen_at, now
    return user.inbox_seen_before


def _next_deadlines(session: Any, assignment_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The open deadline of each assignment (the earliest, if several): for the partner's inbox,
    whether it is coming due (the partner was told) or overdue, and how often it was reminded."""
    if not assignment_ids:
        return {}
    rows = session.scalars(
        select(Deadline)
        .where(
            Deadline.assignment_id.in_(assignment_ids),
            Deadline.status.in_([DeadlineStatus.PENDING.value, DeadlineStatus.OVERDUE.value]),
        )
        .order_by(Deadline.due_at)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for d in rows:
        if d.assignment_id in out:
            continue
        state = "overdue" if d.status == DeadlineStatus.OVERDUE.value else "due_soon" if d.noticed_at else "pending"
        out[str(d.assignment_id)] = {"kind": d.kind, "due_at": d.due_at, "state": state, "reminders": d.reminders}
    return out


def _subjects_of(session: Any, rows: Sequence[Assignment]) -> list[Subject]:
    ids = {a.referral.subject_id for a in rows}
    return list(session.scalars(select(Subject).where(Subject.id.in_(ids)))) if ids else []


def _commit(uow: UnitOfWork) -> None:
    try:
        uow.commit()
    except StaleDataError:
        raise Conflict("the assignment was changed by someone else at the same time; reload it") from None


Extra = Callable[[UnitOfWork, Assignment, datetime], Any]


def _move(services: Services, cmd: Any, actor: Actor, extra: Extra | None = None) -> dict[str, Any]:
    """Load and lock the case, ask the policy, then the state machine; save, emit, commit. `extra`
    writes what the move brings along (a sealed note, the follow-up row) and may give the answer;
    otherwise it is the assignment."""
    screen(services, actor, access.COMMAND_ACTIONS[type(cmd)])  # before the lookup: no existence oracle
    with services.uow() as uow:
        a = cases.lock_assignment(uow.session, cmd.assignment_id)
        referral = a.referral
        authorize(
            services,
            actor,
            access.COMMAND_ACTIONS[type(cmd)],
            cases.case_for_assignment(referral, a),
            referral_id=referral.id,
            subject_id=referral.subject_id,
        )
        now = services.clock.now()
        change = lifecycle.handle(cases.state_of(referral), cmd, at=now, policy=services.deadline_policy)
        cases.save(uow, services, referral, change, now)
        answer = extra(uow, a, now) if extra is not None else None
        if answer is None:
            answer = assignment_view(uow.session, services, a, actor)
        _commit(uow)
        return answer


def _sealed_note(services: Services, note: str | None) -> Extra:
    def seal(uow: UnitOfWork, a: Assignment, _now: datetime) -> None:
        subject = must(uow.session.get(Subject, a.referral.subject_id), "subject")
        a.note_ct = services.vault.seal(uow.session, subject, "assignments", "note", a.id, note)

    return seal


def accept(services: Services, cmd: AcceptAssignment, actor: Actor) -> dict[str, Any]:
    return _move(services, cmd, actor)


def decline(services: Services, cmd: DeclineAssignment, actor: Actor) -> dict[str, Any]:
    return _move(services, cmd, actor, _sealed_note(services, cmd.note))


def record_followup(services: Services, cmd: RecordFollowUp, actor: Actor) -> dict[str, Any]:
    def add_followup(uow: UnitOfWork, a: Assignment, now: datetime) -> dict[str, Any]:
        subject = must(uow.session.get(Subject, a.referral.subject_id), "subject")
        row = FollowUp(
            id=cmd.followup_id,
            assignment_id=a.id,
            referral_id=a.referral_id,
            outcome=cmd.outcome,
            recorded_by=actor.user_id,
            recorded_at=now,
        )
        row.note_ct = services.vault.seal(uow.session, subject, "followups", "note", row.id, cmd.note)
        uow.session.add(row)
        if a.first_followup_at is None:  # for the SLA report: time from acceptance to first contact
            a.first_followup_at = now
        return {"id": row.id, "assignment_id": a.id, "outcome": row.outcome, "recorded_at": now}

    return _move(services, cmd, actor, add_followup)


def close(services: Services, cmd: CloseAssignment, actor: Actor) -> dict[str, Any]:
    return _move(services, cmd, actor, _sealed_note(services, cmd.note))


# -- routing (run by the router worker) ----------------------------------------------------------
class _PartnerPool:
    """The active partners' profiles with their open loads, read once per transaction (if needed): a
    router's batch of referrals shares one read. The loads only rank partners; a chosen partner's
    place is always counted again under its row lock (`_choose_partner`), so a load that another
    router has raised since can cost a second choice, never a place over capacity."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._profiles: list[PartnerProfile] | None = None

    def profiles(self) -> list[PartnerProfile]:
        if self._profiles is None:
            self._profiles = _partner_profiles(self._session)
        return self._profiles

    def set_load(self, partner_id: str, open_assignments: int) -> None:
        self._profiles = [
            p if p.id != partner_id else PartnerProfile(**{**p.__dict__, "open_assignments": open_assignments})
            for p in self.profiles()
        ]

    def took_one(self, partner_id: str) -> None:
        load = next(p.open_assignments for p in self.profiles() if p.id == partner_id)
        self.set_load(partner_id, load + 1)


#: The active partners with their open loads, in one statement built once (no ORM objects: the pool
#: only ranks; the chosen partner's row is locked and loaded on its own).
_OPEN_LOAD = (
    select(func.count())
    .select_from(Assignment)
    .where(Assignment.partner_id == Partner.id, Assignment.status.in_(OPEN_ASSIGNMENT_STATUSES))
    .correlate(Partner)
    .scalar_subquery()
)
_DIRECTORY = (
    select(
        Partner.id,
        Partner.name,
        Partner.services,
        Partner.provinces,
        Partner.districts,
        Partner.languages,
        Partner.capacity,
        _OPEN_LOAD,
        Partner.accepts_minors,
        Partner.staff_sex,
        Partner.active,
        Partner.offers_made,
        Partner.offers_accepted,
        Partner.response_seconds_total,
        Partner.responses,
    )
    .where(Partner.active.is_(True))
    .order_by(Partner.id)
)


def _partner_profiles(session: Session) -> list[PartnerProfile]:
    return [
        PartnerProfile(
            id=r[0],
            name=r[1],
            services=r[2],
            provinces=r[3],
            districts=r[4],
            languages=r[5],
            capacity=r[6],
            open_assignments=int(r[7] or 0),
            accepts_minors=r[8],
            staff_sex=r[9],
            active=r[10],
            offers_made=r[11],
            offers_accepted=r[12],
            mean_response_hours=(r[13] / r[14] / 3600) if r[14] else None,
        )
        for r in session.execute(_DIRECTORY)
    ]


_POOL = "referral_service.partner_pool"
_SUBJECTS = "referral_service.routing_subjects"
_HELD = "referral_service.locked_partners"


def prepare_routing(uow: UnitOfWork, referral_ids: Sequence[str]) -> None:
    """Before routing several referrals in one transaction: lock them all with their assignments,
    read their subjects, and lock and count the partners they will most likely be offered to, in
    a few statements instead of a few per referral.

    The partners are locked in id order, as the referrals are, so two routers whose batches want
    the same partners queue for them instead of deadlocking; a partner chosen later (the likely one
    was full) is locked when it is chosen."""
    session = uow.session
    referrals = cases.lock_referrals(session, referral_ids)
    subject_ids = {r.subject_id for r in referrals}
    if not subject_ids:
        return
    # Held for the transaction: the identity map keeps unchanged rows only weakly, and `session.get`
    # in `route_open_needs` should find them there.
    subjects = {s.id: s for s in session.scalars(select(Subject).where(Subject.id.in_(subject_ids)))}
    transaction_info(session)[_SUBJECTS] = subjects
    pool = _pool(session)
    likely: set[str] = set()
    for referral in referrals:
        subject = subjects.get(referral.subject_id)
        if subject is None:
            continue
        for need in lifecycle.needs_to_route(cases.state_of(referral)):
            choice = route_referral(_case_profile(referral, subject, need.service), pool.profiles(), set(need.tried))
            if choice.chosen is not None:
                likely.add(choice.chosen.id)
    _lock_partners(session, likely)


def _pool(session: Session) -> _PartnerPool:
    pool: _PartnerPool | None = transaction_info(session).get(_POOL)
    if pool is None:
        pool = transaction_info(session)[_POOL] = _PartnerPool(session)
    return pool


def route_open_needs(uow: UnitOfWork, services: Services, referral_id: str) -> list[str]:
    """Offer every needed service that has no open or finished assignment to the best partner left.

    Safe to run again for the same referral: it looks at state, not at the event that woke it.
    Returns the ids of the assignments it offered; raises NotFound for an unknown referral.
    """
    session = uow.session
    referral = cases.lock_referral(session, referral_id)
    state = cases.state_of(referral)
    if not lifecycle.may_route(state):
        return []
    subject = must(session.get(Subject, referral.subject_id), "subject")
    now = services.clock.now()
    pool = _pool(session)
    offered: list[str] = []
    unroutable: list[str] = []
    for need in lifecycle.needs_to_route(state):
        result, partner_row = _choose_partner(session, pool, _case_profile(referral, subject, need.service), need.tried)
        _record_decision(session, referral.id, need.service, result, now)
        if result.chosen is None or partner_row is None:
            unroutable.append(need.service)
            continue
        state = _offer(uow, services, referral, state, need.service, result, partner_row, now)
        pool.took_one(partner_row.id)
        transaction_info(session)[_HELD][partner_row.id].open_now += 1
        offered.append(state.assignments[-1].id)
    cases.save(uow, services, referral, lifecycle.conclude_routing(state, offered, unroutable, at=now), now)
    return offered


def _case_profile(referral: Referral, subject: Subject, service: str) -> CaseProfile:
    return CaseProfile(
        referral_id=referral.id,
        service=service,
        province=subject.province,
        district=subject.district,
        language=subject.preferred_language,
        is_minor=subject.is_minor,
        staff_sex_preference=referral.staff_sex_preference,
    )


class _HeldPartner:
    """A partner row this transaction has locked, with its open assignments counted under the lock."""

    def __init__(self, row: Partner, open_now: int) -> None:
        self.row, self.open_now = row, open_now


def _choose_partner(
    session: Session, pool: _PartnerPool, case: CaseProfile, tried: frozenset[str]
) -> tuple[RoutingResult, Partner | None]:
    """The best partner with a place left, and its row, locked; (result without a choice, None) if none."""
    held: dict[str, _HeldPartner] = transaction_info(session).setdefault(_HELD, {})
    while True:
        result = route_referral(case, pool.profiles(), set(tried))
        if result.chosen is None:
            return result, None
        partner = held.get(result.chosen.id)
        if partner is None:
            partner = held[result.chosen.id] = _lock_and_count(session, result.chosen.id)
        # Once locked, the count stays true to the end of the transaction: an open assignment is only
        # ever created by a router holding this lock (`_offer` counts its own), and a response or a
        # close only lowers the count (counted too high, a partner is passed over, never overfilled).
        if partner.open_now < partner.row.capacity:
            return result, partner.row
        pool.set_load(partner.row.id, partner.open_now)


def _lock_and_count(session: Session, partner_id: str) -> _HeldPartner:
    _lock_partners(session, [partner_id])
    held: _HeldPartner = transaction_info(session)[_HELD][partner_id]
    return held


def _lock_partners(session: Session, partner_ids: Collection[str]) -> None:
    """Competing routers counted loads before either committed: lock the partners (id order) and
    count their open assignments again, so two routers can never both fill a partner's last place.

    The count is a statement of its own, after the lock is granted: in READ COMMITTED it sees every
    offer committed by whoever held the lock before, and this transaction's own new offers, which
    `_offer` writes at once. It runs without a flush (a batch's other changes go in once, at commit),
    so an assignment added to the session some other way and not flushed yet is counted from the
    session (`_unflushed_offers`, a guard: nothing adds one today). A pending change of an existing
    row's status is counted as the database has it: too high, never too low."""
    held: dict[str, _HeldPartner] = transaction_info(session).setdefault(_HELD, {})
    wanted = sorted(set(partner_ids) - set(held))
    if not wanted:
        return
    with session.no_autoflush:
        rows = session.scalars(
            for_update(session, select(Partner).where(Partner.id.in_(wanted)).order_by(Partner.id)).execution_options(
                populate_existing=True
            )
        ).all()
        counts: dict[str, int] = {pid: n for pid, n in session.execute(_OPEN_COUNTS, {"ids": wanted})}
    for row in rows:
        held[row.id] = _HeldPartner(row, int(counts.get(row.id, 0)) + _unflushed_offers(session, row.id))


#: Some partners' open assignments: built once (compiled once, then a prepared statement on PostgreSQL).
_OPEN_COUNTS = (
    select(Assignment.partner_id, func.count())
    .where(
        Assignment.partner_id.in_(bindparam("ids", expanding=True)),
        Assignment.status.in_(OPEN_ASSIGNMENT_STATUSES),
    )
    .group_by(Assignment.partner_id)
)


def _unflushed_offers(session: Session, partner_id: str) -> int:
    open_statuses = set(OPEN_ASSIGNMENT_STATUSES)
    return sum(
        1 for o in session.new if isinstance(o, Assignment) and o.partner_id == partner_id and o.status in open_statuses
    )


def _record_decision(session: Session, referral_id: str, service: str, result: RoutingResult, now: datetime) -> None:
    insert_at_commit(  # with the batch's other decisions, one statement at commit (db.persist)
        session,
        RoutingDecision,
        {
            "id": new_id(),
            "referral_id": referral_id,
            "service": service,
            "chosen_partner_id": result.chosen.id if result.chosen else None,
            "considered": [c.to_json() for c in result.considered],
            "decided_at": now,
        },
    )


def _offer(
    uow: UnitOfWork,
    services: Services,
    referral: Referral,
    state: ReferralState,
    service: str,
    result: RoutingResult,
    partner_row: Partner,
    now: datetime,
) -> ReferralState:
    """Offer `service` to the chosen partner: the state machine's move, its row, the partner's count."""
    cmd = OfferAssignment(assignment_id=new_id(), partner_id=partner_row.id, service=service)
    change = lifecycle.offer(state, cmd, at=now, policy=services.deadline_policy)
    row = Assignment(
        id=cmd.assignment_id,
        referral_id=referral.id,
        partner_id=cmd.partner_id,
        service=service,
        status=AssignmentStatus.OFFERED,
        reasons=result.chosen_reasons,
        offered_at=now,
        risk_level=referral.risk_level,  # a copy for the SLA report, which reads assignments alone
        followups=[],  # a new offer has none: said here, so nothing asks the database
    )
    # Written at once (db.persist) and joined to referral.assignments as loaded, where `save` finds it
    # and its deadlines' rows can refer to it. The list is read first, so it cannot load the new row too.
    current = list(referral.assignments)
    insert_now(uow.session, row)
    set_committed_value(referral, "assignments", [*current, row])
    partner_row.offers_made = Partner.offers_made + 1  # in SQL: no lost counts
    cases.save(uow, services, referral, change, now)
    return change.referral
