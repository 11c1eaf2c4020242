"""Who may do what, and see what: the one access policy, as a table of rules and pure functions.

A decision looks at four things: the caller's role, the action, the caller's relation to the case
(its own caseworker, a partner holding it, anyone else; or no case at all, for intake and lists)
and the state of consent (given, withdrawn, never given; and which scopes were shared). `RULES`
lists every combination that is allowed; everything else is refused. For reads a rule also says how
much the caller sees (`Sight`), for lists whose rows (`Scope`).

The service layer asks `decide()` and records every decision through one call
(`services/authorization.py`); the API and the pages ask the same functions to refuse early (role
before body) and to offer only the actions a person may take. Nothing here reads the database: the
caller describes the case with `Case`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from referral_service.domain import lifecycle
from referral_service.domain.commands import (
    AcceptAssignment,
    CloseAssignment,
    ConfirmDuplicate,
    DeclineAssignment,
    DismissDuplicate,
    RecordFollowUp,
    ReopenReferral,
    SubmitReferral,
    WithdrawConsent,
    WithdrawReferral,
)
from referral_service.domain.model import (
    OPEN_ASSIGNMENT_STATUSES,
    PERSONAL_SUBJECT_FIELDS,
    SCOPE_FIELDS,
    Actor,
    Role,
)


class Action(StrEnum):
    """What is asked for. The values are the `action` of the access record (and the audit log)."""

    SUBMIT_REFERRAL = "referral.submit"
    LIST_REFERRALS = "referral.list"
    READ_REFERRAL = "referral.read"
    WITHDRAW_CONSENT = "referral.consent_withdraw"
    WITHDRAW_REFERRAL = "referral.withdraw"
    REOPEN_REFERRAL = "referral.reopen"
    LEARN_OF_MATCH = "duplicate.warn"  # be told that a new referral matches this earlier one
    LIST_ASSIGNMENTS = "assignment.list"
    ACCEPT_ASSIGNMENT = "assignment.accept"
    DECLINE_ASSIGNMENT = "assignment.decline"
    RECORD_FOLLOWUP = "followup.record"
    CLOSE_ASSIGNMENT = "assignment.close"
    LIST_OVERDUE = "deadline.overdue"
    READ_PARTNERS = "partner.read"
    WRITE_PARTNERS = "partner.write"
    READ_DELIVERIES = "partner.deliveries.read"
    REPLAY_DELIVERY = "partner.deliveries.replay"
    LIST_DUPLICATES = "duplicate.list"
    CONFIRM_DUPLICATE = "duplicate.confirm"
    DISMISS_DUPLICATE = "duplicate.dismiss"
    READ_AUDIT = "audit.read"
    EXPORT_AUDIT = "audit.export"
    VERIFY_AUDIT = "audit.verify"  # the log's head, checkpoints, proofs and verification
    REPORT_SLA = "report.sla"  # how well promises were kept, per partner and risk level
    REPORT_STATISTICS = "report.statistics"  # aggregate counts with small cells suppressed


class Outcome(StrEnum):
    """How an access record ends (the `outcome` of an audit entry)."""

    ALLOWED = "allowed"
    DENIED = "denied"  # the policy refused it (403)
    CONFLICT = "conflict"  # the policy allowed it, but the move could not be made (409): nothing changed


class Relation(StrEnum):
    NO_CASE = "no_case"  # the action is on no one case: intake, lists, the directory, the duplicates queue
    OWN_CASEWORKER = "own_caseworker"  # the caller submitted the referral
    HOLDING_PARTNER = "holding_partner"  # the caller's organisation holds it (see `Case.holders`)
    OTHER = "other"


class Consent(StrEnum):
    NO_CASE = "no_case"
    GIVEN = "given"
    WITHDRAWN = "withdrawn"
    NOT_GIVEN = "not_given"


class Sight(StrEnum):
    """How much of a referral a reader sees."""

    SUPERVISOR = "supervisor"  # everything, and the person's other referrals
    CASE_FILE = "case_file"  # everything about this referral
    CONSENTED = "consented"  # what a holding partner needs to serve, and the consented scopes


class Scope(StrEnum):
    """Whose rows a list shows."""

    ALL = "all"
    OWN = "own"  # a caseworker's own referrals; a partner's own organisation's assignments


ANY_RELATION = frozenset(Relation)
ANY_CONSENT = frozenset(Consent)
EVERY_ROLE = frozenset(Role)


@dataclass(frozen=True)
class Rule:
    action: Action
    roles: frozenset[Role]
    relations: frozenset[Relation] = ANY_RELATION
    consents: frozenset[Consent] = ANY_CONSENT
    sight: Sight | None = None
    scope: Scope = Scope.ALL


def _rule(
    action: Action,
    *roles: Role,
    relations: Iterable[Relation] = ANY_RELATION,
    consents: Iterable[Consent] = ANY_CONSENT,
    sight: Sight | None = None,
    scope: Scope = Scope.ALL,
) -> Rule:
    return Rule(action, frozenset(roles), frozenset(relations), frozenset(consents), sight, scope)


S, C, P = Role.SUPERVISOR, Role.CASEWORKER, Role.PARTNER
OWN, HOLDING = (Relation.OWN_CASEWORKER,), (Relation.HOLDING_PARTNER,)

RULES: tuple[Rule, ...] = (
    # Intake and the referral list: caseworkers see their own referrals, supervisors all of them.
    _rule(Action.SUBMIT_REFERRAL, C, S),
    _rule(Action.LIST_REFERRALS, S),
    _rule(Action.LIST_REFERRALS, C, scope=Scope.OWN),
    # One referral: its caseworker and supervisors see it all; a partner only while it holds an
    # offered or accepted assignment and consent stands, and then only the consented scopes.
    _rule(Action.READ_REFERRAL, S, sight=Sight.SUPERVISOR),
    _rule(Action.READ_REFERRAL, C, relations=OWN, sight=Sight.CASE_FILE),
    _rule(Action.READ_REFERRAL, P, relations=HOLDING, consents=(Consent.GIVEN,), sight=Sight.CONSENTED),
    # Being told at intake that a person matches an earlier referral names that referral: only to
    # those who may read it anyway, or intake becomes an oracle for "was this CNIC referred?".
    _rule(Action.LEARN_OF_MATCH, S),
    _rule(Action.LEARN_OF_MATCH, C, relations=OWN),
    # The caseworker's own actions on the referral (and any supervisor's).
    *(
        r
        for a in (Action.WITHDRAW_CONSENT, Action.WITHDRAW_REFERRAL, Action.REOPEN_REFERRAL)
        for r in (_rule(a, S), _rule(a, C, relations=OWN))
    ),
    # The partner side. Acting on an assignment needs only that it is the partner's own: whether it
    # is still open is the state machine's question (409), not the policy's (403).
    _rule(Action.LIST_ASSIGNMENTS, S),
    _rule(Action.LIST_ASSIGNMENTS, P, scope=Scope.OWN),
    *(
        _rule(a, P, relations=HOLDING)
        for a in (Action.ACCEPT_ASSIGNMENT, Action.DECLINE_ASSIGNMENT, Action.RECORD_FOLLOWUP)
    ),
    _rule(Action.CLOSE_ASSIGNMENT, P, relations=HOLDING),
    _rule(Action.CLOSE_ASSIGNMENT, S),
    _rule(Action.LIST_OVERDUE, S),
    # The partner directory is for every signed-in role but the analyst's (aggregate statistics only);
    # only admins change it.
    _rule(Action.READ_PARTNERS, *(EVERY_ROLE - {Role.ANALYST})),
    _rule(Action.WRITE_PARTNERS, Role.ADMIN),
    # What was sent to a partner's system (ids and statuses only), and sending one again: admins.
    _rule(Action.READ_DELIVERIES, Role.ADMIN),
    _rule(Action.REPLAY_DELIVERY, Role.ADMIN),
    *(_rule(a, S) for a in (Action.LIST_DUPLICATES, Action.CONFIRM_DUPLICATE, Action.DISMISS_DUPLICATE)),
    *(_rule(a, Role.AUDITOR) for a in (Action.READ_AUDIT, Action.EXPORT_AUDIT, Action.VERIFY_AUDIT)),
    # Reports: the SLA names partners, so it is the supervisors'; the statistics (no record, no id,
    # small cells suppressed) are also the analysts', and that is all an analyst may see.
    _rule(Action.REPORT_SLA, S),
    _rule(Action.REPORT_STATISTICS, S, Role.ANALYST),
)

# What a refused caller is told: the rule in words, never anything about the case.
REFUSALS: dict[Action, str] = {
    Action.SUBMIT_REFERRAL: "only caseworkers and supervisors submit referrals",
    Action.LIST_REFERRALS: "only caseworkers and supervisors list referrals",
    Action.READ_REFERRAL: "you may not see this referral",
    Action.WITHDRAW_CONSENT: "only the referral's caseworker or a supervisor may do this",
    Action.WITHDRAW_REFERRAL: "only the referral's caseworker or a supervisor may do this",
    Action.REOPEN_REFERRAL: "only the referral's caseworker or a supervisor may do this",
    Action.LEARN_OF_MATCH: "you may not learn of this referral",
    Action.LIST_ASSIGNMENTS: "the assignment inbox is for partner staff and supervisors",
    Action.ACCEPT_ASSIGNMENT: "only the assigned partner may do this",
    Action.DECLINE_ASSIGNMENT: "only the assigned partner may do this",
    Action.RECORD_FOLLOWUP: "only the assigned partner may do this",
    Action.CLOSE_ASSIGNMENT: "only the assigned partner or a supervisor may do this",
    Action.LIST_OVERDUE: "overdue deadlines are for supervisors",
    # Every signed-in role but the analyst's reads it (a caller without a token gets 401, never this).
    Action.READ_PARTNERS: "analysts see aggregate statistics only, not the partner directory",
    Action.WRITE_PARTNERS: "only admins change the partner directory",
    Action.READ_DELIVERIES: "only admins see deliveries to partners",
    Action.REPLAY_DELIVERY: "only admins replay deliveries to partners",
    Action.LIST_DUPLICATES: "possible duplicates are for supervisors",
    Action.CONFIRM_DUPLICATE: "possible duplicates are for supervisors",
    Action.DISMISS_DUPLICATE: "possible duplicates are for supervisors",
    Action.READ_AUDIT: "the audit log is for auditors",
    Action.EXPORT_AUDIT: "the audit log is for auditors",
    Action.VERIFY_AUDIT: "the audit log is for auditors",
    Action.REPORT_SLA: "the SLA report is for supervisors",
    Action.REPORT_STATISTICS: "the statistics are for analysts and supervisors",
}

# The action each person's command needs.
COMMAND_ACTIONS: dict[type, Action] = {
    SubmitReferral: Action.SUBMIT_REFERRAL,
    WithdrawConsent: Action.WITHDRAW_CONSENT,
    WithdrawReferral: Action.WITHDRAW_REFERRAL,
    ReopenReferral: Action.REOPEN_REFERRAL,
    AcceptAssignment: Action.ACCEPT_ASSIGNMENT,
    DeclineAssignment: Action.DECLINE_ASSIGNMENT,
    RecordFollowUp: Action.RECORD_FOLLOWUP,
    CloseAssignment: Action.CLOSE_ASSIGNMENT,
    ConfirmDuplicate: Action.CONFIRM_DUPLICATE,
    DismissDuplicate: Action.DISMISS_DUPLICATE,
}


@dataclass(frozen=True)
class Case:
    """What the policy needs to know of a referral.

    `holders` are the partner organisations the case is with for this question: for reading the
    referral, every partner with an offered or accepted assignment (`Case.of_referral`); for acting
    on one assignment, that assignment's partner, whatever state it is in (`Case.of_assignment`).
    """

    caseworker_id: str
    consent_given: bool
    consent_withdrawn: bool = False
    consent_share: tuple[str, ...] = ()
    holders: frozenset[str] = frozenset()

    @classmethod
    def of_referral(
        cls,
        *,
        caseworker_id: str,
        consent_given: bool,
        consent_withdrawn: bool,
        consent_share: Iterable[str],
        assignments: Iterable[tuple[str, str]],
    ) -> Case:
        """`assignments`: (partner id, status) of each of the referral's assignments."""
        open_ = {str(s) for s in OPEN_ASSIGNMENT_STATUSES}
        return cls(
            caseworker_id,
            consent_given,
            consent_withdrawn,
            tuple(consent_share),
            frozenset(p for p, status in assignments if status in open_),
        )

    @classmethod
    def of_assignment(
        cls,
        *,
        caseworker_id: str,
        consent_given: bool,
        consent_withdrawn: bool,
        consent_share: Iterable[str],
        partner_id: str,
    ) -> Case:
        return cls(caseworker_id, consent_given, consent_withdrawn, tuple(consent_share), frozenset({partner_id}))


def relation(actor: Actor, case: Case | None) -> Relation:
    if case is None:
        return Relation.NO_CASE
    if actor.user_id == case.caseworker_id:
        return Relation.OWN_CASEWORKER
    if actor.partner_id is not None and actor.partner_id in case.holders:
        return Relation.HOLDING_PARTNER
    return Relation.OTHER


def consent(case: Case | None) -> Consent:
    if case is None:
        return Consent.NO_CASE
    if not case.consent_given:
        return Consent.NOT_GIVEN
    return Consent.WITHDRAWN if case.consent_withdrawn else Consent.GIVEN


def rule_for(role: Role, action: Action, rel: Relation, con: Consent) -> Rule | None:
    """The rule that allows this cell of the table, or None: refused."""
    return next(
        (r for r in RULES if r.action is action and role in r.roles and rel in r.relations and con in r.consents), None
    )


@dataclass(frozen=True)
class Decision:
    action: Action
    allowed: bool
    relation: Relation
    consent: Consent
    rule: Rule | None = None

    @property
    def refusal(self) -> str:
        return REFUSALS[self.action]

    @property
    def scope(self) -> Scope | None:
        return self.rule.scope if self.rule else None

    @property
    def sight(self) -> Sight | None:
        return self.rule.sight if self.rule else None


def decide(actor: Actor, action: Action, case: Case | None = None) -> Decision:
    rel, con = relation(actor, case), consent(case)
    rule = rule_for(actor.role, action, rel, con)
    return Decision(action, rule is not None, rel, con, rule)


def role_may(role: Role, action: Action) -> bool:
    """Whether some case could allow this role the action: the check before looking at any case or body."""
    return any(r.action is action and role in r.roles for r in RULES)


def scope(role: Role, action: Action) -> Scope | None:
    """Whose rows a list shows this role; None: the role may not list them."""
    rule = next((r for r in RULES if r.action is action and role in r.roles), None)
    return rule.scope if rule else None


@dataclass(frozen=True)
class Visibility:
    """What of a referral a reader sees."""

    subject_fields: tuple[str, ...]
    incident: bool
    case_file: bool  # the consent record, the caseworker, the routing decisions
    linked_referrals: bool  # the person's other referrals (confirmed duplicates)
    partner_id: str | None = None  # only this partner's assignments; None: all of them


def visibility(decision: Decision, actor: Actor, case: Case) -> Visibility:
    """For an allowed read: the fields it shows. A partner sees what it needs to serve (sex; the
    rest of the service fields are not personal) and the scopes the person agreed to share."""
    sight = decision.sight
    if sight is None:
        raise ValueError("no visibility without an allowed read")
    if sight is Sight.CONSENTED:
        fields = ["sex"] + [f for s in case.consent_share for f in SCOPE_FIELDS.get(s, ()) if f != "incident"]
        return Visibility(
            tuple(dict.fromkeys(fields)),
            "incident" in case.consent_share,
            case_file=False,
            linked_referrals=False,
            partner_id=actor.partner_id,
        )
    return Visibility(
        PERSONAL_SUBJECT_FIELDS, incident=True, case_file=True, linked_referrals=sight is Sight.SUPERVISOR
    )


# -- what to offer a person ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Available:
    """The actions a person may take on a referral now: the policy allows them and the state
    machine would make the move. For showing only the buttons that work; each action is decided
    again (and recorded) when it is asked for."""

    case: frozenset[Action] = frozenset()
    assignments: Mapping[str, frozenset[Action]] = field(default_factory=dict)

    def on(self, assignment_id: str) -> frozenset[Action]:
        return self.assignments.get(assignment_id, frozenset())


# A stand-in command per action, to ask the state machine whether the move is open (the details of
# a real request, such as a note or the services delivered, are checked when it comes).
_CASE_PROBES: dict[Action, Callable[[str], Any]] = {
    Action.WITHDRAW_CONSENT: WithdrawConsent,
    Action.WITHDRAW_REFERRAL: WithdrawReferral,
    Action.REOPEN_REFERRAL: lambda rid: ReopenReferral(rid, note="-"),
}
_ASSIGNMENT_PROBES: dict[Action, Callable[[str], Any]] = {
    Action.ACCEPT_ASSIGNMENT: AcceptAssignment,
    Action.DECLINE_ASSIGNMENT: lambda aid: DeclineAssignment(aid, "other"),
    Action.RECORD_FOLLOWUP: lambda aid: RecordFollowUp(aid, "other"),
    Action.CLOSE_ASSIGNMENT: lambda aid: CloseAssignment(aid, "other"),
}


def available(actor: Actor, state: lifecycle.ReferralState, case: Case) -> Available:
    on_case = frozenset(
        a
        for a, probe in _CASE_PROBES.items()
        if decide(actor, a, case).allowed and lifecycle.allows(state, probe(state.id))
    )
    per_assignment = {
        x.id: frozenset(
            a
            for a, probe in _ASSIGNMENT_PROBES.items()
            if decide(actor, a, replace(case, holders=frozenset({x.partner_id}))).allowed
            and lifecycle.allows(state, probe(x.id))
        )
        for x in state.assignments
    }
    return Available(on_case, per_assignment)
