"""The case state machine as data: every move a referral, an assignment or a deadline may make.

Three tables (`REFERRAL_MOVES`, `ASSIGNMENT_MOVES`, `DEADLINE_MOVES`) list each allowed move: the
command, the states it may start from, the state it ends in, and its preconditions (`Guard`). Every
(state, command) pair not in a table is refused with `Conflict` (409 through the API, a message on
the pages). The functions below apply a command to a state and return the new state, the events to
emit and the deadline bookkeeping to do. They are pure: no database, no clock (the time comes in as
`at`), no identifiers made up here (they come in the commands); the service layer loads the state,
calls one of them, saves what comes back and emits the events.

A fourth, small table (`DUPLICATE_MOVES`) is the decision on a possible duplicate.

A referral's status is never set by hand: after anything happens to its assignments it is derived
from them (`derive_status`). Only withdrawing and re-opening set it, and a withdrawn or closed
referral keeps its status until a move in the table says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from referral_service.domain import events
from referral_service.domain.commands import (
    AcceptAssignment,
    CancelDeadline,
    CloseAssignment,
    ConfirmDuplicate,
    DeclineAssignment,
    DismissDuplicate,
    EscalateDeadline,
    ExpireOffer,
    FireDeadline,
    MeetDeadline,
    NoticeDeadline,
    OfferAssignment,
    RecordFollowUp,
    RemindDeadline,
    ReopenReferral,
    RouteReferral,
    SubmitReferral,
    WithdrawAssignment,
    WithdrawConsent,
    WithdrawReferral,
)
from referral_service.domain.deadlines import DeadlinePolicy
from referral_service.domain.duplicates import DuplicateStatus
from referral_service.domain.errors import Conflict
from referral_service.domain.model import (
    OPEN_ASSIGNMENT_STATUSES,
    AssignmentStatus,
    DeadlineKind,
    DeadlineStatus,
    ReferralStatus,
)

A, R, D = AssignmentStatus, ReferralStatus, DeadlineStatus


# -- states ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssignmentState:
    id: str
    partner_id: str
    service: str
    status: AssignmentStatus
    offered_at: datetime
    responded_at: datetime | None = None
    closed_at: datetime | None = None
    decline_reason: str | None = None
    close_outcome: str | None = None
    services_delivered: tuple[str, ...] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ASSIGNMENT_STATUSES


@dataclass(frozen=True)
class ReferralState:
    """A referral with its assignments: the aggregate every case move works on."""

    id: str
    status: ReferralStatus
    needs: tuple[str, ...]
    risk_level: str
    consent_given: bool
    consent_withdrawn_at: datetime | None = None
    assignments: tuple[AssignmentState, ...] = ()

    @property
    def consent_live(self) -> bool:
        return self.consent_given and self.consent_withdrawn_at is None

    def assignment(self, assignment_id: str) -> AssignmentState:
        for a in self.assignments:
            if a.id == assignment_id:
                return a
        raise LookupError(f"assignment {assignment_id} is not one of referral {self.id}")


@dataclass(frozen=True)
class DeadlineState:
    id: str
    referral_id: str
    assignment_id: str | None
    kind: DeadlineKind
    risk_level: str
    status: DeadlineStatus
    due_at: datetime
    fired_at: datetime | None = None
    partner_id: str | None = None
    service: str | None = None
    # When the scheduler must look at it next (the notice before due, the due time, the next overdue
    # reminder); None once it is over. The scheduler reads only rows whose wake_at has come.
    wake_at: datetime | None = None
    noticed_at: datetime | None = None  # followup.due was sent
    reminders: int = 0  # overdue reminders sent (the followup.overdue at due is the first)
    escalated_at: datetime | None = None

    @property
    def escalated(self) -> bool:
        return self.escalated_at is not None


# -- the tables -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Guard:
    """A precondition of a move beyond its starting state; `refused` is the Conflict message."""

    holds: Callable[[Any, Any], bool]  # (state, command) -> bool
    refused: str
    field: str | None = None  # the request field it is about, if any


@dataclass(frozen=True)
class Move:
    """One allowed move. `target` None: the referral's status is derived from its assignments afterwards."""

    command: type
    sources: frozenset[str]
    target: str | None
    refused: str  # the Conflict message when the state is not a source; {status} is the state
    guards: tuple[Guard, ...] = ()
    meets: frozenset[DeadlineKind] = frozenset()  # the assignment's deadlines of these kinds are met
    cancels: frozenset[DeadlineKind] = frozenset()  # ... or cancelled
    schedules: DeadlineKind | None = None  # a new deadline of this kind for the assignment

    @property
    def to(self) -> str:
        if self.target is None:
            raise TypeError(f"{self.command.__name__} derives the status; it names none")
        return self.target


ALL_KINDS = frozenset(DeadlineKind)
LIVE = frozenset({R.SUBMITTED, R.ROUTING, R.ASSIGNED, R.UNROUTABLE})  # anything but withdrawn or closed
OPEN = frozenset(OPEN_ASSIGNMENT_STATUSES)
NEW = "new"  # the state before the first move: no row yet

CONSENT_LIVE = Guard(
    lambda s, _: s.consent_live, "consent was withdrawn or never given; record new consent in a new referral"
)
CONSENT_GIVEN = Guard(lambda s, _: s.consent_given, "consent was never given; there is none to withdraw")
CONSENT_NOT_WITHDRAWN = Guard(lambda s, _: s.consent_withdrawn_at is None, "consent was already withdrawn")
NEED_OPEN = Guard(lambda s, c: c.service in open_needs(s), "this need already has an open or finished assignment")
OWN_SERVICES_ONLY = Guard(
    lambda a, c: set(c.services_delivered) <= {a.service},
    "services_delivered may name only the service of this assignment",
    field="services_delivered",
)

REFERRAL_MOVES: tuple[Move, ...] = (
    Move(SubmitReferral, frozenset({NEW}), R.SUBMITTED, "the referral exists already"),
    # Routing (the router, on submit, re-open, decline and expiry): offers, then the status is derived.
    Move(RouteReferral, LIVE, None, "the referral is {status}; it is not routed", (CONSENT_LIVE,)),
    Move(OfferAssignment, LIVE, None, "the referral is {status}; nothing more is offered", (CONSENT_LIVE, NEED_OPEN)),
    Move(WithdrawReferral, LIVE, R.WITHDRAWN, "the referral is already {status}"),
    # Consent can be withdrawn whatever happened; a closed case stays closed (its history is kept),
    # the withdrawal is recorded and partners lose access all the same.
    Move(
        WithdrawConsent,
        LIVE | {R.WITHDRAWN},
        R.WITHDRAWN,
        "consent was already withdrawn",
        (CONSENT_GIVEN, CONSENT_NOT_WITHDRAWN),
    ),
    Move(
        WithdrawConsent,
        frozenset({R.CLOSED}),
        R.CLOSED,
        "consent was already withdrawn",
        (CONSENT_GIVEN, CONSENT_NOT_WITHDRAWN),
    ),
    # A closed case stays closed: new needs are a new referral, with its own consent.
    Move(
        ReopenReferral,
        frozenset({R.WITHDRAWN, R.UNROUTABLE}),
        R.SUBMITTED,
        "the referral is {status}; only a withdrawn or unroutable one re-opens",
        (CONSENT_LIVE,),
    ),
)

ASSIGNMENT_MOVES: tuple[Move, ...] = (
    Move(OfferAssignment, frozenset({NEW}), A.OFFERED, "the assignment exists already", schedules=DeadlineKind.ACCEPT),
    Move(
        AcceptAssignment,
        frozenset({A.OFFERED}),
        A.ACCEPTED,
        "the assignment is {status}, not offered",
        meets=frozenset({DeadlineKind.ACCEPT}),
        schedules=DeadlineKind.FIRST_CONTACT,
    ),
    Move(
        DeclineAssignment,
        OPEN,
        A.DECLINED,
        "the assignment is {status}; only an open assignment can be declined",
        meets=ALL_KINDS,
    ),
    Move(
        RecordFollowUp,
        frozenset({A.ACCEPTED}),
        A.ACCEPTED,
        "the assignment is {status}; accept it before recording follow-ups",
        meets=frozenset({DeadlineKind.FIRST_CONTACT, DeadlineKind.FOLLOWUP}),
        schedules=DeadlineKind.FOLLOWUP,
    ),
    # Only what was accepted can be closed: closing an offer would mark a need served that nobody took on.
    Move(
        CloseAssignment,
        frozenset({A.ACCEPTED}),
        A.CLOSED,
        "the assignment is {status}; only an accepted assignment can be closed",
        (OWN_SERVICES_ONLY,),
        meets=ALL_KINDS,
    ),
    Move(ExpireOffer, frozenset({A.OFFERED}), A.EXPIRED, "the assignment is {status}, not offered"),
    Move(
        WithdrawAssignment,
        OPEN,
        A.WITHDRAWN,
        "the assignment is {status}; only an open one is withdrawn",
        cancels=ALL_KINDS,
    ),
)

NOT_ACCEPT = Guard(lambda d, _: d.kind is not DeadlineKind.ACCEPT, "an accept deadline")

DEADLINE_MOVES: tuple[Move, ...] = (
    # Before due: the partner is told once that a contact or follow-up is coming due.
    Move(
        NoticeDeadline,
        frozenset({D.PENDING}),
        D.PENDING,
        "the deadline is {status}, not pending",
        (NOT_ACCEPT, Guard(lambda d, _: d.noticed_at is None, "the partner was told already")),
    ),
    Move(
        FireDeadline,
        frozenset({D.PENDING}),
        D.FIRED,
        "the deadline is {status}, not pending",
        (Guard(lambda d, _: d.kind is DeadlineKind.ACCEPT, "not an accept deadline"),),
    ),
    Move(
        FireDeadline,
        frozenset({D.PENDING}),
        D.OVERDUE,
        "the deadline is {status}, not pending",
        (NOT_ACCEPT,),
    ),
    # While overdue: reminded every `remind_every`, and once escalated to the supervisors.
    Move(RemindDeadline, frozenset({D.OVERDUE}), D.OVERDUE, "the deadline is {status}, not overdue"),
    Move(
        EscalateDeadline,
        frozenset({D.OVERDUE}),
        D.OVERDUE,
        "the deadline is {status}, not overdue",
        (Guard(lambda d, _: d.escalated_at is None, "the deadline was escalated already"),),
    ),
    Move(MeetDeadline, frozenset({D.PENDING, D.OVERDUE}), D.MET, "the deadline is {status}; it is over"),
    # Overdue ones too: a withdrawn case has nobody left to chase, so it leaves the overdue list.
    Move(CancelDeadline, frozenset({D.PENDING, D.OVERDUE}), D.CANCELLED, "the deadline is {status}; it is over"),
)

# A possible duplicate is decided once, by a supervisor; a second decision is a conflict.
DUPLICATE_MOVES: tuple[Move, ...] = (
    Move(
        ConfirmDuplicate,
        frozenset({DuplicateStatus.PENDING}),
        DuplicateStatus.CONFIRMED,
        "this possible duplicate was already {status}",
    ),
    Move(
        DismissDuplicate,
        frozenset({DuplicateStatus.PENDING}),
        DuplicateStatus.DISMISSED,
        "this possible duplicate was already {status}",
    ),
)

# Events that also go to the partner's own queue: what the partner must hear of at once.
PARTNER_NOTICES: tuple[type[events.AssignmentEvent | events.DeadlineEvent], ...] = (
    events.AssignmentOffered,
    events.AssignmentExpired,
    events.AssignmentWithdrawn,
    events.FollowUpDue,
    events.FollowUpOverdue,
)


def find_move(table: Sequence[Move], state: Any, status: str, command: Any) -> Move:
    """The move `command` makes from `state` (whose status is `status`); Conflict if there is none."""
    rows = [m for m in table if m.command is type(command)]
    if not rows:
        raise TypeError(f"{type(command).__name__} is not a move of this table")
    refusal: Conflict | None = None
    for move in rows:
        if status not in move.sources:
            continue
        failed = next((g for g in move.guards if not g.holds(state, command)), None)
        if failed is None:
            return move
        refusal = refusal or Conflict(failed.refused, {failed.field: [failed.refused]} if failed.field else None)
    raise refusal or Conflict(rows[0].refused.format(status=status))


def permits(table: Sequence[Move], state: Any, status: str, command: Any) -> bool:
    try:
        find_move(table, state, status, command)
    except Conflict:
        return False
    return True


# -- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolveDeadlines:
    """Apply `command` (meet or cancel) to the assignment's deadlines of these kinds that it applies to."""

    assignment_id: str
    command: type[MeetDeadline] | type[CancelDeadline]
    kinds: frozenset[DeadlineKind]


@dataclass(frozen=True)
class ScheduleDeadline:
    assignment_id: str
    partner_id: str
    kind: DeadlineKind
    due_at: datetime
    wake_at: datetime | None = None  # the notice before due; None: the scheduler first looks at due_at

    @property
    def first_wake(self) -> datetime:
        return self.wake_at or self.due_at


@dataclass(frozen=True)
class PartnerResponse:
    """An answer to an offer: counts towards the partner's acceptance rate and response time."""

    partner_id: str
    seconds: int
    accepted: bool


@dataclass(frozen=True)
class Change:
    referral: ReferralState
    events: tuple[events.Event, ...] = ()
    deadlines: tuple[ResolveDeadlines | ScheduleDeadline, ...] = ()
    responses: tuple[PartnerResponse, ...] = ()


@dataclass(frozen=True)
class DeadlineChange:
    deadline: DeadlineState
    events: tuple[events.Event, ...] = ()
    expires: str | None = None  # the assignment whose offer this deadline ends, if it is still offered


# -- the referral's status -----------------------------------------------------------------------------
HELD = frozenset({R.WITHDRAWN, R.CLOSED})  # set by a move, never derived away


def derive_status(state: ReferralState, unroutable: Collection[str] = ()) -> ReferralStatus:
    """The referral's status from its assignments: the one place it is worked out.

    Withdrawn and closed are held. Otherwise: closed once every need has a closed assignment and
    nothing is open; assigned while any partner has accepted; routing while an offer is out, or when
    the last one ended and the router is to route onward; unroutable when routing found no partner for
    a need (`unroutable`) and nothing is open. A submitted or unroutable referral stays as it is until
    routing says otherwise.
    """
    if state.status in HELD:
        return state.status
    live = [a for a in state.assignments if a.is_open]
    closed = {a.service for a in state.assignments if a.status is A.CLOSED}
    if not live and set(state.needs) <= closed:
        return R.CLOSED
    if any(a.status is A.ACCEPTED for a in live):
        return R.ASSIGNED
    if live:
        return R.ROUTING
    if unroutable:
        return R.UNROUTABLE
    if state.status in (R.ROUTING, R.ASSIGNED):
        return R.ROUTING
    return state.status


def open_needs(state: ReferralState) -> tuple[str, ...]:
    """Needs that no assignment covers: none offered, accepted or closed for them."""
    covered = {a.service for a in state.assignments if a.is_open or a.status is A.CLOSED}
    return tuple(n for n in dict.fromkeys(state.needs) if n not in covered)


def tried_partners(state: ReferralState, service: str) -> frozenset[str]:
    """A partner that declined or let the offer lapse is not asked again; one whose offer was
    withdrawn with the referral may be, once it is re-opened."""
    return frozenset(
        a.partner_id for a in state.assignments if a.service == service and a.status in (A.DECLINED, A.EXPIRED)
    )


def may_route(state: ReferralState) -> bool:
    return permits(REFERRAL_MOVES, state, state.status, RouteReferral(state.id))


# -- moves of the referral -------------------------------------------------------------------------------
def submit(referral_id: str, subject_id: str, cmd: SubmitReferral, *, at: datetime) -> Change:
    move = find_move(REFERRAL_MOVES, None, NEW, cmd)
    state = ReferralState(
        id=referral_id,
        status=R(move.to),
        needs=tuple(dict.fromkeys(cmd.needs)),
        risk_level=cmd.risk_level,
        consent_given=cmd.consent_given,
    )
    return Change(
        state,
        (
            events.ReferralSubmitted(
                referral_id=referral_id,
                subject_id=subject_id,
                risk_level=cmd.risk_level,
                consent_given=cmd.consent_given,
                occurred_at=at,
            ),
        ),
    )


def _withdraw_open(
    state: ReferralState, reason: str, at: datetime
) -> tuple[ReferralState, list[events.Event], list[ResolveDeadlines]]:
    out: list[events.Event] = []
    orders: list[ResolveDeadlines] = []
    for a in state.assignments:
        if a.is_open:
            step = _assignment_move(state, WithdrawAssignment(a.id, reason), at, None)
            state = step.referral
            out.extend(step.events)
            orders.extend(o for o in step.deadlines if isinstance(o, ResolveDeadlines))
    return state, out, orders


def _referral_move(
    state: ReferralState, cmd: WithdrawConsent | WithdrawReferral | ReopenReferral, at: datetime
) -> Change:
    move = find_move(REFERRAL_MOVES, state, state.status, cmd)
    # The new status first: withdrawn and closed are held, so pulling the offers back derives nothing.
    state = replace(state, status=R(move.to))
    if isinstance(cmd, ReopenReferral):
        return Change(state, (events.ReferralReopened(referral_id=state.id, occurred_at=at),))
    if isinstance(cmd, WithdrawReferral):
        state, out, orders = _withdraw_open(state, "referral_withdrawn", at)
        out.append(events.ReferralWithdrawn(referral_id=state.id, occurred_at=at))
        return Change(state, tuple(out), tuple(orders))
    state, out, orders = _withdraw_open(replace(state, consent_withdrawn_at=at), "consent_withdrawn", at)
    out.append(events.ConsentWithdrawn(referral_id=state.id, occurred_at=at))
    return Change(state, tuple(out), tuple(orders))


# -- moves of one assignment -----------------------------------------------------------------------------
def _assignment_move(state: ReferralState, cmd: Any, at: datetime, policy: DeadlinePolicy | None) -> Change:
    before = state.assignment(cmd.assignment_id)
    move = find_move(ASSIGNMENT_MOVES, before, before.status, cmd)
    after = replace(before, status=A(move.to))
    ids: dict[str, Any] = {
        "referral_id": state.id,
        "assignment_id": before.id,
        "partner_id": before.partner_id,
        "service": before.service,
        "occurred_at": at,
    }
    out: list[events.Event] = []
    responses: list[PartnerResponse] = []
    if isinstance(cmd, AcceptAssignment):
        after = replace(after, responded_at=at)
        out.append(events.AssignmentAccepted(**ids))
    elif isinstance(cmd, DeclineAssignment):
        after = replace(after, responded_at=at, decline_reason=cmd.reason)
        out.append(events.AssignmentDeclined(**ids, reason=cmd.reason))
    elif isinstance(cmd, RecordFollowUp):
        out.append(
            events.FollowUpRecorded(
                referral_id=state.id,
                assignment_id=before.id,
                followup_id=cmd.followup_id,
                outcome=cmd.outcome,
                occurred_at=at,
            )
        )
    elif isinstance(cmd, CloseAssignment):
        after = replace(
            after,
            closed_at=at,
            close_outcome=cmd.outcome,
            services_delivered=tuple(dict.fromkeys(cmd.services_delivered)),
        )
        out.append(events.AssignmentClosed(**ids, outcome=cmd.outcome))
    elif isinstance(cmd, ExpireOffer):
        after = replace(after, responded_at=at)
        out.append(events.AssignmentExpired(**ids))
    elif isinstance(cmd, WithdrawAssignment):
        after = replace(after, closed_at=at)
        out.append(events.AssignmentWithdrawn(**ids, reason=cmd.reason))
    if before.status is A.OFFERED and isinstance(cmd, AcceptAssignment | DeclineAssignment):
        responses.append(
            PartnerResponse(
                before.partner_id,
                int((at - before.offered_at).total_seconds()),
                accepted=isinstance(cmd, AcceptAssignment),
            )
        )
    orders: list[ResolveDeadlines | ScheduleDeadline] = []
    if move.meets:
        orders.append(ResolveDeadlines(before.id, MeetDeadline, move.meets))
    if move.cancels:
        orders.append(ResolveDeadlines(before.id, CancelDeadline, move.cancels))
    if move.schedules is not None and policy is not None:
        due = due_at(policy, state.risk_level, move.schedules, at)
        orders.append(
            ScheduleDeadline(
                before.id, before.partner_id, move.schedules, due, notice_at(policy, state.risk_level, at, due)
            )
        )
    referral = replace(state, assignments=tuple(after if a.id == before.id else a for a in state.assignments))
    status = derive_status(referral)
    if status is R.CLOSED and state.status is not R.CLOSED:
        out.append(events.ReferralClosed(referral_id=state.id, occurred_at=at))
    return Change(replace(referral, status=status), tuple(out), tuple(orders), tuple(responses))


def due_at(policy: DeadlinePolicy, risk_level: str, kind: DeadlineKind, at: datetime) -> datetime:
    levels = policy.for_risk(risk_level)
    return (
        at
        + {
            DeadlineKind.ACCEPT: levels.accept,
            DeadlineKind.FIRST_CONTACT: levels.first_contact,
            DeadlineKind.FOLLOWUP: levels.followup_every,
        }[kind]
    )


def notice_at(policy: DeadlinePolicy, risk_level: str, at: datetime, due: datetime) -> datetime:
    """When the partner is told that a contact or follow-up scheduled at `at` is coming due."""
    return at + (due - at) * policy.for_risk(risk_level).due_notice


def offer(state: ReferralState, cmd: OfferAssignment, *, at: datetime, policy: DeadlinePolicy) -> Change:
    """One offer of a routing pass; the referral's status is settled by `conclude_routing`."""
    find_move(REFERRAL_MOVES, state, state.status, cmd)
    find_move(ASSIGNMENT_MOVES, None, NEW, cmd)
    offered = AssignmentState(
        id=cmd.assignment_id, partner_id=cmd.partner_id, service=cmd.service, status=A.OFFERED, offered_at=at
    )
    accept_by = due_at(policy, state.risk_level, DeadlineKind.ACCEPT, at)
    event = events.AssignmentOffered(
        referral_id=state.id,
        assignment_id=offered.id,
        partner_id=offered.partner_id,
        service=offered.service,
        risk_level=state.risk_level,
        accept_by=accept_by.isoformat(),
        occurred_at=at,
    )
    return Change(
        replace(state, assignments=(*state.assignments, offered)),
        (event,),
        (ScheduleDeadline(offered.id, offered.partner_id, DeadlineKind.ACCEPT, accept_by),),
    )


def conclude_routing(
    state: ReferralState, offered: Sequence[str], unroutable: Sequence[str], *, at: datetime
) -> Change:
    """The end of a routing pass: the status it leaves, and what it tells (routed, unroutable)."""
    out: list[events.Event] = []
    if offered:
        out.append(events.ReferralRouted(referral_id=state.id, assignment_ids=list(offered), occurred_at=at))
    if unroutable:
        out.append(events.ReferralUnroutable(referral_id=state.id, services=list(unroutable), occurred_at=at))
    return Change(replace(state, status=derive_status(state, unroutable)), tuple(out))


def handle(state: ReferralState, cmd: Any, *, at: datetime, policy: DeadlinePolicy) -> Change:
    """Apply a person's command (or the scheduler's ExpireOffer) to the referral it concerns."""
    if isinstance(cmd, WithdrawConsent | WithdrawReferral | ReopenReferral):
        return _referral_move(state, cmd, at)
    if isinstance(
        cmd, AcceptAssignment | DeclineAssignment | RecordFollowUp | CloseAssignment | ExpireOffer | WithdrawAssignment
    ):
        return _assignment_move(state, cmd, at, policy)
    if isinstance(cmd, OfferAssignment):
        return offer(state, cmd, at=at, policy=policy)
    raise TypeError(f"{type(cmd).__name__} is not a move of a referral")


def allows(state: ReferralState, cmd: Any) -> bool:
    """Whether `cmd` is a legal move now (to offer only the actions that would succeed)."""
    if isinstance(cmd, WithdrawConsent | WithdrawReferral | ReopenReferral | OfferAssignment | RouteReferral):
        return permits(REFERRAL_MOVES, state, state.status, cmd)
    before = state.assignment(cmd.assignment_id)
    return permits(ASSIGNMENT_MOVES, before, before.status, cmd)


# -- moves of a deadline ----------------------------------------------------------------------------------
def handle_deadline(
    state: DeadlineState,
    cmd: FireDeadline | NoticeDeadline | RemindDeadline | EscalateDeadline | MeetDeadline | CancelDeadline,
    *,
    at: datetime,
    policy: DeadlinePolicy | None = None,
) -> DeadlineChange:
    """One move of a deadline. Firing, reminding and escalating say when to look again, which needs
    the policy; meeting and cancelling end the deadline (nothing more is ever sent for it)."""
    move = find_move(DEADLINE_MOVES, state, state.status, cmd)
    after = replace(state, status=D(move.to))
    if isinstance(cmd, MeetDeadline | CancelDeadline):
        return DeadlineChange(replace(after, wake_at=None))
    ids: dict[str, Any] = {
        "referral_id": state.referral_id,
        "assignment_id": state.assignment_id,
        "deadline_id": state.id,
        "kind": state.kind.value,
        "risk_level": state.risk_level,
        "partner_id": state.partner_id,
        "service": state.service,
        "due_at": state.due_at.isoformat(),
        "occurred_at": at,
    }
    if isinstance(cmd, NoticeDeadline):
        return DeadlineChange(replace(after, noticed_at=at, wake_at=state.due_at), (events.FollowUpDue(**ids),))
    if isinstance(cmd, FireDeadline) and state.kind is DeadlineKind.ACCEPT:
        return DeadlineChange(replace(after, fired_at=at, wake_at=None), expires=state.assignment_id)
    if policy is None:
        raise TypeError(f"{type(cmd).__name__} needs the deadline policy")
    levels = policy.for_risk(state.risk_level)
    again = at + levels.remind_every
    if isinstance(cmd, EscalateDeadline):
        return DeadlineChange(
            replace(after, escalated_at=at, wake_at=again),
            (events.FollowUpEscalated(**ids, reminders=state.reminders),),
        )
    if isinstance(cmd, FireDeadline):
        after = replace(after, fired_at=at)
    reminder = state.reminders + 1
    out: list[events.Event] = [events.FollowUpOverdue(**ids, reminder=reminder)]
    after = replace(after, reminders=reminder, wake_at=again)
    if levels.escalate_after == 0 and after.escalated_at is None:  # escalated as soon as it is overdue
        after = replace(after, escalated_at=at)
        out.append(events.FollowUpEscalated(**ids, reminders=reminder))
    return DeadlineChange(after, tuple(out))


def wake(state: DeadlineState, *, at: datetime, policy: DeadlinePolicy) -> DeadlineChange:
    """What the scheduler does with a deadline whose `wake_at` has come: the notice before due, firing
    at due, then a reminder every `remind_every` while it stays unmet, and escalation to the supervisors
    at the first wake after `escalate_after` reminders. (An offer's deadline only fires: the offer lapses.)"""
    cmd: FireDeadline | NoticeDeadline | RemindDeadline | EscalateDeadline
    if state.status is D.PENDING:
        early = at < state.due_at and state.kind is not DeadlineKind.ACCEPT and state.noticed_at is None
        cmd = NoticeDeadline(state.id) if early else FireDeadline(state.id)
        if at < state.due_at and not early:  # woken early with nothing to say: look again at due
            return DeadlineChange(replace(state, wake_at=state.due_at))
    elif state.status is D.OVERDUE:
        limit = policy.for_risk(state.risk_level).escalate_after
        due_escalation = state.escalated_at is None and state.reminders >= limit
        cmd = EscalateDeadline(state.id) if due_escalation else RemindDeadline(state.id)
    else:  # over already: never looked at again
        return DeadlineChange(replace(state, wake_at=None))
    return handle_deadline(state, cmd, at=at, policy=policy)


def resolvable(command: type[MeetDeadline] | type[CancelDeadline]) -> frozenset[str]:
    """The deadline statuses `command` applies to (to select the rows to load)."""
    return frozenset().union(*(m.sources for m in DEADLINE_MOVES if m.command is command))


def decide_duplicate(status: DuplicateStatus, cmd: ConfirmDuplicate | DismissDuplicate) -> DuplicateStatus:
    return DuplicateStatus(find_move(DUPLICATE_MOVES, None, status, cmd).to)


@dataclass(frozen=True)
class Offerable:
    """One need a routing pass must find a partner for, and who is not asked again."""

    service: str
    tried: frozenset[str] = field(default_factory=frozenset)


def needs_to_route(state: ReferralState) -> tuple[Offerable, ...]:
    if not may_route(state):
        return ()
    return tuple(Offerable(s, tried_partners(state, s)) for s in open_needs(state))


def news_since(
    status: str, offered_at: datetime, responded_at: datetime | None, closed_at: datetime | None, since: datetime | None
) -> str | None:
    """What happened to an assignment since the partner's last look at the inbox (`since`; None: never
    looked, so every offer is new): "offered", "withdrawn", "expired", or None."""
    if status == A.WITHDRAWN.value and closed_at is not None and (since is None or closed_at > since):
        return "withdrawn"
    if status == A.EXPIRED.value and responded_at is not None and (since is None or responded_at > since):
        return "expired"
    if since is None or offered_at > since:
        return "offered"
    return None
