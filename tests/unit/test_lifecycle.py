"""The case state machine, table by table: every allowed move gives the right state and events,
every other (state, command) pair is refused with Conflict, and the tables hold nothing untested.

The expected moves are written out here again, independently of `domain/lifecycle.py`, so a change
to a table is a change to this file too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from referral_service.domain import events, lifecycle
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
from referral_service.domain.lifecycle import (
    AssignmentState,
    DeadlineState,
    ReferralState,
    ResolveDeadlines,
    ScheduleDeadline,
)
from referral_service.domain.model import (
    AssignmentStatus,
    DeadlineKind,
    DeadlineStatus,
    ReferralStatus,
    SubjectInput,
)

A, R, D, K = AssignmentStatus, ReferralStatus, DeadlineStatus, DeadlineKind
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
OFFERED_AT = AT - timedelta(hours=2)
POLICY = DeadlinePolicy.default()
ALL_KINDS = frozenset(DeadlineKind)


def assignment(
    status: AssignmentStatus, aid: str = "a1", service: str = "medical", partner: str = "p1", **kw: Any
) -> AssignmentState:
    return AssignmentState(id=aid, partner_id=partner, service=service, status=status, offered_at=OFFERED_AT, **kw)


def referral(
    status: ReferralStatus, *assignments: AssignmentState, needs: tuple[str, ...] = ("medical",), consent: str = "live"
) -> ReferralState:
    return ReferralState(
        id="r1",
        status=status,
        needs=needs,
        risk_level="high",
        consent_given=consent != "never",
        consent_withdrawn_at=AT - timedelta(days=1) if consent == "withdrawn" else None,
        assignments=assignments,
    )


def kinds(change: lifecycle.Change) -> list[type]:
    return [type(e) for e in change.events]


# -- the referral's own moves --------------------------------------------------------------------------
# A plausible case in each status (what its assignments are when it is in that status).
CASE_IN = {
    R.SUBMITTED: (),
    R.ROUTING: (assignment(A.OFFERED),),
    R.ASSIGNED: (assignment(A.ACCEPTED),),
    R.UNROUTABLE: (assignment(A.DECLINED),),
    R.WITHDRAWN: (assignment(A.WITHDRAWN),),
    R.CLOSED: (assignment(A.CLOSED),),
}
LIVE = {R.SUBMITTED, R.ROUTING, R.ASSIGNED, R.UNROUTABLE}
CONSENTS = ("live", "withdrawn", "never")
REFERRAL_COMMANDS = {
    "withdraw": WithdrawReferral("r1", "moved away"),
    "withdraw_consent": WithdrawConsent("r1"),
    "reopen": ReopenReferral("r1", "back again"),
}


def expected_referral_move(name: str, status: ReferralStatus, consent: str) -> ReferralStatus | None:
    """The status after the move, or None: refused."""
    if name == "withdraw":
        return R.WITHDRAWN if status in LIVE else None
    if name == "withdraw_consent":
        if consent != "live":
            return None
        return R.CLOSED if status is R.CLOSED else R.WITHDRAWN
    if name == "reopen":
        return R.SUBMITTED if status in (R.WITHDRAWN, R.UNROUTABLE) and consent == "live" else None
    raise AssertionError(name)


REFERRAL_CELLS = [(n, s, c) for n in REFERRAL_COMMANDS for s in ReferralStatus for c in CONSENTS]


@pytest.mark.parametrize(
    ("name", "status", "consent"), REFERRAL_CELLS, ids=[f"{n}-{s}-{c}" for n, s, c in REFERRAL_CELLS]
)
def test_every_referral_move_and_every_refusal(name: str, status: ReferralStatus, consent: str) -> None:
    state = referral(status, *CASE_IN[status], consent=consent)
    cmd = REFERRAL_COMMANDS[name]
    target = expected_referral_move(name, status, consent)
    if target is None:
        with pytest.raises(Conflict):
            lifecycle.handle(state, cmd, at=AT, policy=POLICY)
        assert not lifecycle.allows(state, cmd)
        return
    assert lifecycle.allows(state, cmd)
    change = lifecycle.handle(state, cmd, at=AT, policy=POLICY)
    after = change.referral
    assert after.status is target
    was_open = [a for a in state.assignments if a.is_open]
    if name == "reopen":
        assert kinds(change) == [events.ReferralReopened]
        assert after.assignments == state.assignments and change.deadlines == ()
        return
    # Withdrawing the referral or the consent pulls back every open assignment, and only those.
    last = events.ReferralWithdrawn if name == "withdraw" else events.ConsentWithdrawn
    assert kinds(change) == [events.AssignmentWithdrawn] * len(was_open) + [last]
    assert all(
        a.status is A.WITHDRAWN and a.closed_at == AT for a in after.assignments if a.id in {w.id for w in was_open}
    )
    assert [a for a in after.assignments if a.id not in {w.id for w in was_open}] == [
        a for a in state.assignments if not a.is_open
    ]
    assert change.deadlines == tuple(ResolveDeadlines(a.id, CancelDeadline, ALL_KINDS) for a in was_open)
    reason = "referral_withdrawn" if name == "withdraw" else "consent_withdrawn"
    assert all(e.reason == reason for e in change.events if isinstance(e, events.AssignmentWithdrawn))
    if name == "withdraw_consent":
        assert after.consent_withdrawn_at == AT
    else:
        assert after.consent_withdrawn_at == state.consent_withdrawn_at


def test_withdrawing_consent_on_a_closed_case_records_it_and_keeps_it_closed() -> None:
    closed = referral(
        R.CLOSED, assignment(A.CLOSED, close_outcome="services_delivered", services_delivered=("medical",))
    )
    change = lifecycle.handle(closed, WithdrawConsent("r1"), at=AT, policy=POLICY)
    assert change.referral == replace(closed, consent_withdrawn_at=AT)
    assert kinds(change) == [events.ConsentWithdrawn]


@pytest.mark.parametrize("status", list(ReferralStatus))
@pytest.mark.parametrize("consent", CONSENTS)
def test_routing_only_a_live_referral_with_live_consent(status: ReferralStatus, consent: str) -> None:
    state = referral(status, *CASE_IN[status], consent=consent)
    assert lifecycle.may_route(state) is (status in LIVE and consent == "live")
    if not lifecycle.may_route(state):
        assert lifecycle.needs_to_route(state) == ()
        with pytest.raises(Conflict):
            lifecycle.offer(state, OfferAssignment("a9", "p2", "medical"), at=AT, policy=POLICY)


def test_submitting_starts_a_referral_as_submitted() -> None:
    cmd = SubmitReferral(
        subject=SubjectInput("N. Bibi", "Punjab", "Lahore"),
        needs=["medical", "medical", "legal_aid"],
        risk_level="critical",
        consent_given=True,
    )
    change = lifecycle.submit("r1", "s1", cmd, at=AT)
    assert change.referral == ReferralState(
        id="r1", status=R.SUBMITTED, needs=("medical", "legal_aid"), risk_level="critical", consent_given=True
    )
    [event] = change.events
    assert isinstance(event, events.ReferralSubmitted)
    assert (event.referral_id, event.subject_id, event.risk_level, event.consent_given, event.occurred_at) == (
        "r1",
        "s1",
        "critical",
        True,
        AT,
    )


# -- routing ---------------------------------------------------------------------------------------------
def test_an_offer_adds_an_offered_assignment_with_its_accept_deadline() -> None:
    state = referral(R.SUBMITTED, needs=("medical", "legal_aid"))
    change = lifecycle.offer(state, OfferAssignment("a1", "p1", "medical"), at=AT, policy=POLICY)
    assert change.referral.assignments == (AssignmentState("a1", "p1", "medical", A.OFFERED, offered_at=AT),)
    assert change.referral.status is R.SUBMITTED  # settled at the end of the pass
    accept_by = AT + POLICY.for_risk("high").accept
    [event] = change.events
    assert isinstance(event, events.AssignmentOffered)
    assert (event.assignment_id, event.partner_id, event.service, event.risk_level, event.accept_by) == (
        "a1",
        "p1",
        "medical",
        "high",
        accept_by.isoformat(),
    )
    assert change.deadlines == (ScheduleDeadline("a1", "p1", K.ACCEPT, accept_by),)


@pytest.mark.parametrize("covered", [A.OFFERED, A.ACCEPTED, A.CLOSED])
def test_a_need_with_an_open_or_finished_assignment_is_not_offered_again(covered: AssignmentStatus) -> None:
    state = referral(R.ROUTING, assignment(covered))
    assert lifecycle.open_needs(state) == ()
    with pytest.raises(Conflict, match="already has an open or finished assignment"):
        lifecycle.offer(state, OfferAssignment("a2", "p2", "medical"), at=AT, policy=POLICY)


@pytest.mark.parametrize("ended", [A.DECLINED, A.EXPIRED, A.WITHDRAWN])
def test_a_need_whose_assignment_ended_is_routed_again_but_not_to_one_that_said_no(ended: AssignmentStatus) -> None:
    state = referral(R.ROUTING, assignment(ended))
    [need] = lifecycle.needs_to_route(state)
    assert need.service == "medical"
    # A declined or lapsed offer is not made to that partner again; a withdrawn one may be.
    assert need.tried == (frozenset() if ended is A.WITHDRAWN else frozenset({"p1"}))


@pytest.mark.parametrize(
    ("assignments", "offered", "unroutable", "status", "told"),
    [
        ((assignment(A.OFFERED),), ["a1"], [], R.ROUTING, [events.ReferralRouted]),
        ((), [], ["medical"], R.UNROUTABLE, [events.ReferralUnroutable]),
        (
            (assignment(A.OFFERED, "a1"),),
            ["a1"],
            ["legal_aid"],
            R.ROUTING,
            [events.ReferralRouted, events.ReferralUnroutable],
        ),
        (
            (assignment(A.ACCEPTED, "a1"), assignment(A.OFFERED, "a2", "legal_aid")),
            ["a2"],
            [],
            R.ASSIGNED,
            [events.ReferralRouted],
        ),
        ((assignment(A.ACCEPTED),), [], [], R.ASSIGNED, []),  # nothing left to route: as it was
    ],
    ids=["offered", "unroutable", "partly", "assigned-and-offered", "nothing-to-do"],
)
def test_a_routing_pass_ends_in_the_derived_status(
    assignments: tuple[AssignmentState, ...],
    offered: list[str],
    unroutable: list[str],
    status: ReferralStatus,
    told: list[type],
) -> None:
    state = referral(R.SUBMITTED, *assignments, needs=("medical", "legal_aid"))
    change = lifecycle.conclude_routing(state, offered, unroutable, at=AT)
    assert change.referral.status is status and kinds(change) == told
    assert all(e.occurred_at == AT for e in change.events)


# -- one assignment's moves ------------------------------------------------------------------------------
ASSIGNMENT_COMMANDS = {
    "accept": AcceptAssignment("a1"),
    "decline": DeclineAssignment("a1", "no_capacity", "full"),
    "followup": RecordFollowUp("a1", "contacted", followup_id="f1"),
    "close": CloseAssignment("a1", "services_delivered", services_delivered=["medical", "medical"]),
    "expire": ExpireOffer("a1"),
    "withdraw": WithdrawAssignment("a1", "referral_withdrawn"),
}
# command -> (the states it starts from, where it ends, its event, deadlines met, cancelled, scheduled)
EXPECTED_ASSIGNMENT_MOVES: dict[
    str,
    tuple[
        set[AssignmentStatus],
        AssignmentStatus,
        type,
        frozenset[DeadlineKind],
        frozenset[DeadlineKind],
        DeadlineKind | None,
    ],
] = {
    "accept": ({A.OFFERED}, A.ACCEPTED, events.AssignmentAccepted, frozenset({K.ACCEPT}), frozenset(), K.FIRST_CONTACT),
    "decline": ({A.OFFERED, A.ACCEPTED}, A.DECLINED, events.AssignmentDeclined, ALL_KINDS, frozenset(), None),
    "followup": (
        {A.ACCEPTED},
        A.ACCEPTED,
        events.FollowUpRecorded,
        frozenset({K.FIRST_CONTACT, K.FOLLOWUP}),
        frozenset(),
        K.FOLLOWUP,
    ),
    "close": ({A.ACCEPTED}, A.CLOSED, events.AssignmentClosed, ALL_KINDS, frozenset(), None),
    "expire": ({A.OFFERED}, A.EXPIRED, events.AssignmentExpired, frozenset(), frozenset(), None),
    "withdraw": ({A.OFFERED, A.ACCEPTED}, A.WITHDRAWN, events.AssignmentWithdrawn, frozenset(), ALL_KINDS, None),
}
# The referral around the assignment, by the assignment's status (what it would be).
AROUND = {
    A.OFFERED: R.ROUTING,
    A.ACCEPTED: R.ASSIGNED,
    A.DECLINED: R.ROUTING,
    A.EXPIRED: R.ROUTING,
    A.WITHDRAWN: R.WITHDRAWN,
    A.CLOSED: R.CLOSED,
}
ASSIGNMENT_CELLS = [(n, s) for n in ASSIGNMENT_COMMANDS for s in AssignmentStatus]


@pytest.mark.parametrize(("name", "status"), ASSIGNMENT_CELLS, ids=[f"{n}-{s}" for n, s in ASSIGNMENT_CELLS])
def test_every_assignment_move_and_every_refusal(name: str, status: AssignmentStatus) -> None:
    state = referral(AROUND[status], assignment(status))
    cmd = ASSIGNMENT_COMMANDS[name]
    sources, target, event_type, meets, cancels, schedules = EXPECTED_ASSIGNMENT_MOVES[name]
    if status not in sources:
        with pytest.raises(Conflict, match=f"the assignment is {status}"):
            lifecycle.handle(state, cmd, at=AT, policy=POLICY)
        assert not lifecycle.allows(state, cmd)
        return
    change = lifecycle.handle(state, cmd, at=AT, policy=POLICY)
    [after] = change.referral.assignments
    assert after.status is target
    assert type(change.events[0]) is event_type and change.events[0].occurred_at == AT
    expected_orders: list[Any] = []
    if meets:
        expected_orders.append(ResolveDeadlines("a1", MeetDeadline, meets))
    if cancels:
        expected_orders.append(ResolveDeadlines("a1", CancelDeadline, cancels))
    if schedules:
        levels = POLICY.for_risk("high")
        delay = {K.FIRST_CONTACT: levels.first_contact, K.FOLLOWUP: levels.followup_every}[schedules]
        # The partner hears it is coming due at the policy's fraction of the window (80 % by default).
        expected_orders.append(ScheduleDeadline("a1", "p1", schedules, AT + delay, AT + delay * 0.8))
    assert list(change.deadlines) == expected_orders
    # An answer to an offer counts towards the partner's figures; nothing else does.
    answered = status is A.OFFERED and name in ("accept", "decline")
    assert change.responses == ((lifecycle.PartnerResponse("p1", 7200, accepted=name == "accept"),) if answered else ())


def test_each_move_writes_what_it_is_about() -> None:
    offered, accepted = referral(R.ROUTING, assignment(A.OFFERED)), referral(R.ASSIGNED, assignment(A.ACCEPTED))
    got = {
        name: lifecycle.handle(
            offered if name in ("accept", "expire") else accepted, cmd, at=AT, policy=POLICY
        ).referral.assignments[0]
        for name, cmd in ASSIGNMENT_COMMANDS.items()
    }
    assert got["accept"].responded_at == AT
    assert (got["decline"].responded_at, got["decline"].decline_reason) == (AT, "no_capacity")
    assert got["followup"] == accepted.assignments[0]
    assert (got["close"].closed_at, got["close"].close_outcome, got["close"].services_delivered) == (
        AT,
        "services_delivered",
        ("medical",),
    )
    assert got["expire"].responded_at == AT
    assert got["withdraw"].closed_at == AT
    followup = lifecycle.handle(accepted, ASSIGNMENT_COMMANDS["followup"], at=AT, policy=POLICY).events[0]
    assert isinstance(followup, events.FollowUpRecorded)
    assert (followup.followup_id, followup.outcome) == ("f1", "contacted")


def test_closing_an_offer_nobody_accepted_is_refused() -> None:
    state = referral(R.ROUTING, assignment(A.OFFERED))
    with pytest.raises(Conflict, match="only an accepted assignment can be closed"):
        lifecycle.handle(
            state, CloseAssignment("a1", "services_delivered", services_delivered=["medical"]), at=AT, policy=POLICY
        )


@pytest.mark.parametrize(
    ("delivered", "allowed"),
    [
        ([], True),
        (["medical"], True),
        (["medical", "medical"], True),
        (["psychosocial"], False),
        (["medical", "legal_aid"], False),
    ],
)
def test_services_delivered_must_be_the_assignments_own(delivered: list[str], allowed: bool) -> None:
    state = referral(
        R.ASSIGNED, assignment(A.ACCEPTED), assignment(A.ACCEPTED, "a2", "legal_aid"), needs=("medical", "legal_aid")
    )
    cmd = CloseAssignment("a1", "services_delivered", services_delivered=delivered)
    if allowed:
        assert lifecycle.handle(state, cmd, at=AT, policy=POLICY).referral.assignments[0].status is A.CLOSED
        return
    with pytest.raises(Conflict) as refused:
        lifecycle.handle(state, cmd, at=AT, policy=POLICY)
    assert set(refused.value.fields) == {"services_delivered"}  # another need of the referral is not this one's


# -- the referral's status, derived ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "assignments", "needs", "derived"),
    [
        (R.ROUTING, [A.OFFERED], ("medical",), R.ROUTING),
        (R.ROUTING, [A.ACCEPTED], ("medical",), R.ASSIGNED),
        (R.ASSIGNED, [A.CLOSED], ("medical",), R.CLOSED),
        (R.ASSIGNED, [A.CLOSED, A.ACCEPTED], ("medical", "legal_aid"), R.ASSIGNED),
        (R.ASSIGNED, [A.CLOSED, A.OFFERED], ("medical", "legal_aid"), R.ROUTING),
        (R.ASSIGNED, [A.CLOSED, A.CLOSED], ("medical", "legal_aid"), R.CLOSED),
        # The last open offer ended: routing onward, until the router says what came of it.
        (R.ASSIGNED, [A.DECLINED], ("medical",), R.ROUTING),
        (R.ROUTING, [A.EXPIRED], ("medical",), R.ROUTING),
        (R.SUBMITTED, [], ("medical",), R.SUBMITTED),
        (R.SUBMITTED, [A.WITHDRAWN], ("medical",), R.SUBMITTED),  # re-opened, not routed yet
        (R.UNROUTABLE, [A.DECLINED], ("medical",), R.UNROUTABLE),
        # Withdrawn and closed are held whatever the assignments say.
        (R.WITHDRAWN, [A.CLOSED], ("medical",), R.WITHDRAWN),
        (R.CLOSED, [A.CLOSED], ("medical", "legal_aid"), R.CLOSED),
    ],
)
def test_the_referral_status_is_derived_from_its_assignments(
    before: ReferralStatus, assignments: list[AssignmentStatus], needs: tuple[str, ...], derived: ReferralStatus
) -> None:
    services = list(needs) + ["medical"] * len(assignments)
    state = referral(before, *(assignment(s, f"a{i}", services[i]) for i, s in enumerate(assignments)), needs=needs)
    assert lifecycle.derive_status(state) is derived


def test_unroutable_only_when_nothing_is_open() -> None:
    nothing_open = referral(R.SUBMITTED)
    assert lifecycle.derive_status(nothing_open, unroutable=["medical"]) is R.UNROUTABLE
    offered = referral(R.SUBMITTED, assignment(A.OFFERED), needs=("medical", "legal_aid"))
    assert lifecycle.derive_status(offered, unroutable=["legal_aid"]) is R.ROUTING


def test_closing_the_last_need_closes_the_referral_and_says_so_once() -> None:
    state = referral(
        R.ASSIGNED, assignment(A.CLOSED, "a0", "legal_aid"), assignment(A.ACCEPTED), needs=("medical", "legal_aid")
    )
    change = lifecycle.handle(state, CloseAssignment("a1", "services_delivered"), at=AT, policy=POLICY)
    assert change.referral.status is R.CLOSED
    assert kinds(change) == [events.AssignmentClosed, events.ReferralClosed]
    one_of_two = referral(
        R.ASSIGNED, assignment(A.ACCEPTED), assignment(A.ACCEPTED, "a2", "legal_aid"), needs=("medical", "legal_aid")
    )
    change = lifecycle.handle(one_of_two, CloseAssignment("a1", "other"), at=AT, policy=POLICY)
    assert change.referral.status is R.ASSIGNED and kinds(change) == [events.AssignmentClosed]


def test_partner_notices_are_the_offer_its_expiry_and_its_withdrawal_and_the_follow_up_reminders() -> None:
    assert set(lifecycle.PARTNER_NOTICES) == {
        events.AssignmentOffered,
        events.AssignmentExpired,
        events.AssignmentWithdrawn,
        events.FollowUpDue,
        events.FollowUpOverdue,
    }


# -- deadlines ----------------------------------------------------------------------------------------------
DEADLINE_COMMANDS = {
    "fire": FireDeadline("d1"),
    "notice": NoticeDeadline("d1"),
    "remind": RemindDeadline("d1"),
    "escalate": EscalateDeadline("d1"),
    "meet": MeetDeadline("d1"),
    "cancel": CancelDeadline("d1"),
}
EXPECTED_DEADLINE_MOVES = {
    "fire": {D.PENDING},
    "notice": {D.PENDING},
    "remind": {D.OVERDUE},
    "escalate": {D.OVERDUE},
    "meet": {D.PENDING, D.OVERDUE},
    "cancel": {D.PENDING, D.OVERDUE},
}
DEADLINE_CELLS = [(n, s, k) for n in DEADLINE_COMMANDS for s in DeadlineStatus for k in DeadlineKind]


def deadline(status: DeadlineStatus, kind: DeadlineKind) -> DeadlineState:
    return DeadlineState(
        id="d1",
        referral_id="r1",
        assignment_id="a1",
        kind=kind,
        risk_level="high",
        status=status,
        due_at=AT - timedelta(minutes=1),
    )


@pytest.mark.parametrize(("name", "status", "kind"), DEADLINE_CELLS, ids=[f"{n}-{s}-{k}" for n, s, k in DEADLINE_CELLS])
def test_every_deadline_move_and_every_refusal(name: str, status: DeadlineStatus, kind: DeadlineKind) -> None:
    state, cmd = deadline(status, kind), DEADLINE_COMMANDS[name]
    # An offer's deadline is never noticed ahead: the offer names its accept-by time itself.
    if status not in EXPECTED_DEADLINE_MOVES[name] or (name == "notice" and kind is K.ACCEPT):
        with pytest.raises(Conflict):
            lifecycle.handle_deadline(state, cmd, at=AT, policy=POLICY)
        return
    change = lifecycle.handle_deadline(state, cmd, at=AT, policy=POLICY)
    remind_every = POLICY.for_risk("high").remind_every
    if name == "notice":
        assert change.deadline == replace(state, noticed_at=AT, wake_at=state.due_at)
        assert [type(e) for e in change.events] == [events.FollowUpDue]
    elif name == "remind":
        assert change.deadline == replace(state, reminders=1, wake_at=AT + remind_every)
        assert [(type(e), e.reminder) for e in change.events] == [(events.FollowUpOverdue, 1)]  # type: ignore[attr-defined]
    elif name == "escalate":
        assert change.deadline == replace(state, escalated_at=AT, wake_at=AT + remind_every)
        assert [type(e) for e in change.events] == [events.FollowUpEscalated]
    elif name == "meet":
        assert change == lifecycle.DeadlineChange(replace(state, status=D.MET))
    elif name == "cancel":
        assert change == lifecycle.DeadlineChange(replace(state, status=D.CANCELLED))
    elif kind is K.ACCEPT:  # the offer lapses, if it is still unanswered (the assignment's own move)
        assert change == lifecycle.DeadlineChange(replace(state, status=D.FIRED, fired_at=AT), expires="a1")
    else:
        assert change.deadline == replace(state, status=D.OVERDUE, fired_at=AT, reminders=1, wake_at=AT + remind_every)
        assert change.expires is None
        [overdue] = change.events
        assert isinstance(overdue, events.FollowUpOverdue)
        assert (overdue.deadline_id, overdue.assignment_id, overdue.kind, overdue.risk_level, overdue.occurred_at) == (
            "d1",
            "a1",
            kind.value,
            "high",
            AT,
        )


def test_meeting_and_cancelling_apply_to_outstanding_deadlines_only() -> None:
    assert lifecycle.resolvable(MeetDeadline) == lifecycle.resolvable(CancelDeadline) == {D.PENDING, D.OVERDUE}


# -- possible duplicates ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", list(DuplicateStatus))
@pytest.mark.parametrize(
    ("cmd", "target"),
    [(ConfirmDuplicate("x"), DuplicateStatus.CONFIRMED), (DismissDuplicate("x"), DuplicateStatus.DISMISSED)],
)
def test_a_possible_duplicate_is_decided_once(status: DuplicateStatus, cmd: Any, target: DuplicateStatus) -> None:
    if status is DuplicateStatus.PENDING:
        assert lifecycle.decide_duplicate(status, cmd) is target
    else:
        with pytest.raises(Conflict, match=f"already {status}"):
            lifecycle.decide_duplicate(status, cmd)


# -- the tables hold exactly what is tested above --------------------------------------------------------------
def _pairs(table: tuple[lifecycle.Move, ...]) -> set[tuple[type, str]]:
    return {(m.command, str(s)) for m in table for s in m.sources}


def test_the_tables_allow_exactly_the_moves_tested_here() -> None:
    referral_pairs = (
        {(WithdrawReferral, str(s)) for s in LIVE}
        | {(WithdrawConsent, str(s)) for s in ReferralStatus}
        | {(ReopenReferral, str(s)) for s in (R.WITHDRAWN, R.UNROUTABLE)}
        | {(RouteReferral, str(s)) for s in LIVE}
        | {(OfferAssignment, str(s)) for s in LIVE}
        | {(SubmitReferral, lifecycle.NEW)}
    )
    assert _pairs(lifecycle.REFERRAL_MOVES) == referral_pairs
    by_command = {
        type(cmd): sources
        for name, cmd in ASSIGNMENT_COMMANDS.items()
        for sources in [EXPECTED_ASSIGNMENT_MOVES[name][0]]
    }
    assignment_pairs = {(c, str(s)) for c, sources in by_command.items() for s in sources} | {
        (OfferAssignment, lifecycle.NEW)
    }
    assert _pairs(lifecycle.ASSIGNMENT_MOVES) == assignment_pairs
    deadline_pairs = {
        (type(DEADLINE_COMMANDS[n]), str(s)) for n, sources in EXPECTED_DEADLINE_MOVES.items() for s in sources
    }
    assert _pairs(lifecycle.DEADLINE_MOVES) == deadline_pairs
    assert _pairs(lifecycle.DUPLICATE_MOVES) == {(ConfirmDuplicate, "pending"), (DismissDuplicate, "pending")}
