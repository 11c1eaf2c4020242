"""The access policy, cell by cell: every role x action x relation to the case x consent, what a
reader sees, whose rows a list shows, and which actions a page offers.

`expected()` is the contract's "who" column written out again, independently of `RULES`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referral_service.domain import access, lifecycle
from referral_service.domain.access import Action, Case, Consent, Relation, Scope, Sight
from referral_service.domain.model import (
    PERSONAL_SUBJECT_FIELDS,
    Actor,
    AssignmentStatus,
    ReferralStatus,
    Role,
)

C, S, P, AUD, ADM = Role.CASEWORKER, Role.SUPERVISOR, Role.PARTNER, Role.AUDITOR, Role.ADMIN
OWN, HOLDING = Relation.OWN_CASEWORKER, Relation.HOLDING_PARTNER
OWNER_OR_SUPERVISOR = (
    Action.READ_REFERRAL,
    Action.LEARN_OF_MATCH,
    Action.WITHDRAW_CONSENT,
    Action.WITHDRAW_REFERRAL,
    Action.REOPEN_REFERRAL,
)


def expected(role: Role, action: Action, rel: Relation, con: Consent) -> bool:
    if action in (Action.SUBMIT_REFERRAL, Action.LIST_REFERRALS):
        return role in (C, S)
    if action is Action.READ_REFERRAL and role is P:
        # A partner only while it holds the case, and only while consent stands.
        return rel is HOLDING and con is Consent.GIVEN
    if action in OWNER_OR_SUPERVISOR:
        return role is S or (role is C and rel is OWN)
    if action is Action.LIST_ASSIGNMENTS:
        return role in (P, S)
    if action in (Action.ACCEPT_ASSIGNMENT, Action.DECLINE_ASSIGNMENT, Action.RECORD_FOLLOWUP):
        return role is P and rel is HOLDING
    if action is Action.CLOSE_ASSIGNMENT:
        return role is S or (role is P and rel is HOLDING)
    if action in (Action.LIST_OVERDUE, Action.LIST_DUPLICATES, Action.CONFIRM_DUPLICATE, Action.DISMISS_DUPLICATE):
        return role is S
    if action is Action.READ_PARTNERS:
        return role is not Role.ANALYST  # the analyst sees aggregate statistics and nothing else
    if action is Action.REPORT_SLA:
        return role is S
    if action is Action.REPORT_STATISTICS:
        return role in (S, Role.ANALYST)
    if action in (Action.WRITE_PARTNERS, Action.READ_DELIVERIES, Action.REPLAY_DELIVERY):
        return role is ADM
    if action in (Action.READ_AUDIT, Action.EXPORT_AUDIT, Action.VERIFY_AUDIT):
        return role is AUD
    raise AssertionError(f"no expectation for {action}")


@pytest.mark.parametrize("action", list(Action))
def test_every_cell_of_the_policy(action: Action) -> None:
    wrong = [
        (role.value, rel.value, con.value)
        for role in Role
        for rel in Relation
        for con in Consent
        if (access.rule_for(role, action, rel, con) is not None) is not expected(role, action, rel, con)
    ]
    assert wrong == [], f"{action}: cells that disagree with the contract"


def test_the_analyst_may_read_the_statistics_and_nothing_else() -> None:
    allowed = {
        action
        for action in Action
        for rel in Relation
        for con in Consent
        if access.rule_for(Role.ANALYST, action, rel, con) is not None
    }
    assert allowed == {Action.REPORT_STATISTICS}


def test_every_action_has_a_refusal_in_words_and_every_command_an_action() -> None:
    assert set(access.REFUSALS) == set(Action)
    assert all(access.REFUSALS.values())
    assert {a for a in access.COMMAND_ACTIONS.values()} <= set(Action)


# -- relation and consent ------------------------------------------------------------------------------------
def _case(**overrides: object) -> Case:
    fields: dict[str, object] = {
        "caseworker_id": "cw-a",
        "consent_given": True,
        "consent_withdrawn": False,
        "consent_share": ["contact"],
        "assignments": [("p1", "offered"), ("p2", "declined")],
    }
    fields.update(overrides)
    return Case.of_referral(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("actor", "relation"),
    [
        (Actor("cw-a", C), OWN),
        (Actor("cw-b", C), Relation.OTHER),
        (Actor("sup", S), Relation.OTHER),
        (Actor("u1", P, "p1"), HOLDING),  # an open offer
        (Actor("u2", P, "p2"), Relation.OTHER),  # declined: it no longer holds the case
        (Actor("u3", P, "p3"), Relation.OTHER),
        (Actor("u4", P), Relation.OTHER),  # a partner account without an organisation holds nothing
    ],
)
def test_relation_to_a_referral(actor: Actor, relation: Relation) -> None:
    assert access.relation(actor, _case()) is relation
    assert access.relation(actor, None) is Relation.NO_CASE


def test_for_acting_on_an_assignment_its_partner_holds_it_whatever_its_state() -> None:
    declined = Case.of_assignment(
        caseworker_id="cw-a", consent_given=True, consent_withdrawn=True, consent_share=[], partner_id="p2"
    )
    assert access.relation(Actor("u2", P, "p2"), declined) is HOLDING
    # So a finished assignment is the state machine's 409, not the policy's 403.
    assert access.decide(Actor("u2", P, "p2"), Action.RECORD_FOLLOWUP, declined).allowed
    assert not access.decide(Actor("u1", P, "p1"), Action.RECORD_FOLLOWUP, declined).allowed


@pytest.mark.parametrize(
    ("given", "withdrawn", "consent"),
    [(True, False, Consent.GIVEN), (True, True, Consent.WITHDRAWN), (False, False, Consent.NOT_GIVEN)],
)
def test_consent_of_a_case(given: bool, withdrawn: bool, consent: Consent) -> None:
    assert access.consent(_case(consent_given=given, consent_withdrawn=withdrawn)) is consent
    assert access.consent(None) is Consent.NO_CASE


def test_a_partner_loses_sight_when_consent_is_withdrawn_or_its_offer_ends() -> None:
    holder = Actor("u1", P, "p1")
    assert access.decide(holder, Action.READ_REFERRAL, _case()).allowed
    assert not access.decide(holder, Action.READ_REFERRAL, _case(consent_withdrawn=True)).allowed
    assert not access.decide(holder, Action.READ_REFERRAL, _case(assignments=[("p1", "declined")])).allowed
    assert access.decide(holder, Action.READ_REFERRAL, _case(assignments=[("p1", "accepted")])).allowed


# -- what a reader sees ------------------------------------------------------------------------------------------
def _seen(actor: Actor, case: Case) -> access.Visibility:
    decision = access.decide(actor, Action.READ_REFERRAL, case)
    assert decision.allowed
    return access.visibility(decision, actor, case)


def test_supervisors_see_everything_and_the_persons_other_referrals() -> None:
    assert _seen(Actor("sup", S), _case()) == access.Visibility(
        PERSONAL_SUBJECT_FIELDS, incident=True, case_file=True, linked_referrals=True
    )


def test_the_own_caseworker_sees_the_whole_case_file() -> None:
    assert _seen(Actor("cw-a", C), _case()) == access.Visibility(
        PERSONAL_SUBJECT_FIELDS, incident=True, case_file=True, linked_referrals=False
    )


@pytest.mark.parametrize(
    ("share", "fields", "incident"),
    [
        ([], ("sex",), False),
        (["contact"], ("sex", "full_name", "phone", "address"), False),
        (["identity"], ("sex", "cnic", "date_of_birth"), False),
        (["incident"], ("sex",), True),
        (["contact", "identity", "incident"], ("sex", "full_name", "phone", "address", "cnic", "date_of_birth"), True),
    ],
)
def test_a_holding_partner_sees_the_consented_scopes_and_its_own_assignments(
    share: list[str], fields: tuple[str, ...], incident: bool
) -> None:
    seen = _seen(Actor("u1", P, "p1"), _case(consent_share=share))
    assert seen == access.Visibility(fields, incident, case_file=False, linked_referrals=False, partner_id="p1")


def test_sight_per_reader() -> None:
    assert access.decide(Actor("sup", S), Action.READ_REFERRAL, _case()).sight is Sight.SUPERVISOR
    assert access.decide(Actor("cw-b", C), Action.READ_REFERRAL, _case()).sight is None
    with pytest.raises(ValueError):
        access.visibility(access.decide(Actor("cw-b", C), Action.READ_REFERRAL, _case()), Actor("cw-b", C), _case())


# -- lists and pages ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "action", "scope"),
    [
        (C, Action.LIST_REFERRALS, Scope.OWN),
        (S, Action.LIST_REFERRALS, Scope.ALL),
        (P, Action.LIST_REFERRALS, None),
        (P, Action.LIST_ASSIGNMENTS, Scope.OWN),
        (S, Action.LIST_ASSIGNMENTS, Scope.ALL),
        (C, Action.LIST_ASSIGNMENTS, None),
    ],
)
def test_whose_rows_a_list_shows(role: Role, action: Action, scope: Scope | None) -> None:
    assert access.scope(role, action) is scope
    assert access.decide(Actor("x", role, "p1" if role is P else None), action).scope is scope


@pytest.mark.parametrize(
    ("role", "actions"),
    [
        (
            C,
            {
                Action.SUBMIT_REFERRAL,
                Action.LIST_REFERRALS,
                Action.READ_REFERRAL,
                Action.LEARN_OF_MATCH,
                Action.WITHDRAW_CONSENT,
                Action.WITHDRAW_REFERRAL,
                Action.REOPEN_REFERRAL,
                Action.READ_PARTNERS,
            },
        ),
        (
            P,
            {
                Action.READ_REFERRAL,
                Action.LIST_ASSIGNMENTS,
                Action.ACCEPT_ASSIGNMENT,
                Action.DECLINE_ASSIGNMENT,
                Action.RECORD_FOLLOWUP,
                Action.CLOSE_ASSIGNMENT,
                Action.READ_PARTNERS,
            },
        ),
        (AUD, {Action.READ_PARTNERS, Action.READ_AUDIT, Action.EXPORT_AUDIT, Action.VERIFY_AUDIT}),
        (ADM, {Action.READ_PARTNERS, Action.WRITE_PARTNERS, Action.READ_DELIVERIES, Action.REPLAY_DELIVERY}),
        (
            S,
            set(Action)
            - {
                Action.ACCEPT_ASSIGNMENT,
                Action.DECLINE_ASSIGNMENT,
                Action.RECORD_FOLLOWUP,
                Action.WRITE_PARTNERS,
                Action.READ_AUDIT,
                Action.READ_DELIVERIES,
                Action.REPLAY_DELIVERY,
                Action.EXPORT_AUDIT,
                Action.VERIFY_AUDIT,
            },
        ),
    ],
)
def test_what_each_role_may_attempt_before_any_case_is_looked_at(role: Role, actions: set[Action]) -> None:
    assert {a for a in Action if access.role_may(role, a)} == actions


# -- what a page offers ---------------------------------------------------------------------------------------------
AT = datetime(2026, 10, 1, tzinfo=UTC)


def _state(
    status: ReferralStatus, *assignments: tuple[str, str, AssignmentStatus], withdrawn: bool = False
) -> lifecycle.ReferralState:
    return lifecycle.ReferralState(
        id="r1",
        status=status,
        needs=("medical", "legal_aid"),
        risk_level="high",
        consent_given=True,
        consent_withdrawn_at=AT if withdrawn else None,
        assignments=tuple(
            lifecycle.AssignmentState(
                aid, partner, "medical" if aid == "a1" else "legal_aid", st, offered_at=AT - timedelta(hours=1)
            )
            for aid, partner, st in assignments
        ),
    )


def _available(actor: Actor, state: lifecycle.ReferralState) -> access.Available:
    case = Case.of_referral(
        caseworker_id="cw-a",
        consent_given=state.consent_given,
        consent_withdrawn=state.consent_withdrawn_at is not None,
        consent_share=["contact"],
        assignments=[(a.partner_id, a.status) for a in state.assignments],
    )
    return access.available(actor, state, case)


def test_a_page_offers_each_person_only_the_moves_they_may_make_now() -> None:
    live = _state(
        ReferralStatus.ASSIGNED, ("a1", "p1", AssignmentStatus.OFFERED), ("a2", "p2", AssignmentStatus.ACCEPTED)
    )
    partner1, partner2 = _available(Actor("u1", P, "p1"), live), _available(Actor("u2", P, "p2"), live)
    assert partner1.on("a1") == {Action.ACCEPT_ASSIGNMENT, Action.DECLINE_ASSIGNMENT}
    assert partner1.on("a2") == frozenset()  # another partner's
    assert partner2.on("a2") == {Action.DECLINE_ASSIGNMENT, Action.RECORD_FOLLOWUP, Action.CLOSE_ASSIGNMENT}
    assert partner1.case == partner2.case == frozenset()
    supervisor = _available(Actor("sup", S), live)
    assert supervisor.on("a1") == frozenset()  # an offer nobody accepted cannot be closed
    assert supervisor.on("a2") == {Action.CLOSE_ASSIGNMENT}
    owner = _available(Actor("cw-a", C), live)
    assert owner.case == {Action.WITHDRAW_CONSENT, Action.WITHDRAW_REFERRAL}
    assert owner.on("a1") == owner.on("a2") == frozenset()
    assert _available(Actor("cw-b", C), live).case == frozenset()


@pytest.mark.parametrize(
    ("status", "withdrawn", "offered"),
    [
        (ReferralStatus.WITHDRAWN, False, {Action.WITHDRAW_CONSENT, Action.REOPEN_REFERRAL}),
        (ReferralStatus.WITHDRAWN, True, set()),
        (ReferralStatus.UNROUTABLE, False, {Action.WITHDRAW_CONSENT, Action.WITHDRAW_REFERRAL, Action.REOPEN_REFERRAL}),
        (ReferralStatus.CLOSED, False, {Action.WITHDRAW_CONSENT}),  # recorded; the case stays closed
        (ReferralStatus.CLOSED, True, set()),
    ],
)
def test_case_actions_follow_the_state_machine(status: ReferralStatus, withdrawn: bool, offered: set[Action]) -> None:
    assert _available(Actor("cw-a", C), _state(status, withdrawn=withdrawn)).case == offered
