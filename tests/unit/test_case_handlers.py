"""The service layer's handlers for the case lifecycle, called directly (cosmicpython's test_handlers
style): real SQLite unit of work and crypto, the router step and the scheduler called in-line, no HTTP.
Each rule of the state machine is seen here once through the services: state saved, events emitted,
nothing written when a move is refused, every access decision recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Assignment, Deadline, OutboxMessage, Partner, Referral
from referral_service.domain.commands import (
    AcceptAssignment,
    CloseAssignment,
    DeclineAssignment,
    RecordFollowUp,
    WithdrawConsent,
    WithdrawReferral,
)
from referral_service.domain.errors import Conflict, Forbidden
from referral_service.domain.model import Actor, Role
from referral_service.services import assignments, deadlines, partners, referrals, users
from referral_service.services.assignments import route_open_needs
from referral_service.services.deadlines import fire_due_deadlines
from schemas import PartnerSchema, ReferralInputSchema
from tests.conftest import FakeClock, embedded_settings
from tests.factories import partner, referral_body

MEDICAL, OTHER = "p-peshawar-medical", "p-peshawar-other"


@dataclass
class Recorder:
    entries: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)

    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Any = (),
        outcome: str = "allowed",
        details: Any = None,
    ) -> None:
        self.entries.append((action, actor.user_id if actor else None, referral_id, outcome))

    def decisions(self, action: str) -> list[tuple[str | None, str | None, str]]:
        return [(who, rid, outcome) for a, who, rid, outcome in self.entries if a == action]


@dataclass
class Case:
    services: Services
    recorder: Recorder
    clock: FakeClock
    caseworker: Actor
    supervisor: Actor
    medical: Actor
    other: Actor
    referral_id: str = ""

    def route(self) -> list[str]:
        with self.services.uow() as uow:
            offered = route_open_needs(uow, self.services, self.referral_id)
            uow.commit()
            return offered

    def status(self) -> tuple[str, list[tuple[str, str]]]:
        with self.services.uow() as uow:
            r = uow.session.get(Referral, self.referral_id)
            assert r is not None
            return r.status, [(a.partner_id, a.status) for a in r.assignments]

    def outbox(self) -> list[str]:
        with self.services.uow() as uow:
            return list(
                uow.session.scalars(
                    select(OutboxMessage.type)
                    .where(OutboxMessage.exchange == "referrals.events")
                    .order_by(OutboxMessage.id)
                )
            )

    def deadlines(self) -> list[tuple[str, str]]:
        with self.services.uow() as uow:
            return [
                (d.kind, d.status)
                for d in uow.session.scalars(
                    select(Deadline).where(Deadline.referral_id == self.referral_id).order_by(Deadline.due_at)
                )
            ]

    def snapshot(self) -> tuple[Any, ...]:
        with self.services.uow() as uow:
            s = uow.session
            return (
                self.status(),
                self.deadlines(),
                s.scalar(select(func.count()).select_from(OutboxMessage)),
                tuple(s.execute(select(Partner.id, Partner.responses, Partner.offers_accepted).order_by(Partner.id))),
            )


@pytest.fixture
def case(home: Path, clock: FakeClock) -> Iterator[Case]:
    recorder = Recorder()
    services = bootstrap(embedded_settings(home), clock=clock, access=recorder)
    partners.upsert_partners(
        services,
        [PartnerSchema().load(partner()), PartnerSchema().load(partner(id=OTHER, name="Other Relief", capacity=5))],
    )

    def person(role: Role, partner_id: str | None = None) -> Actor:
        made = users.create_user(services, name=f"{role}-{partner_id}", role=role, partner_id=partner_id)
        return Actor(made["id"], role, partner_id, made["name"])

    c = Case(
        services,
        recorder,
        clock,
        person(Role.CASEWORKER),
        person(Role.SUPERVISOR),
        person(Role.PARTNER, MEDICAL),
        person(Role.PARTNER, OTHER),
    )
    c.referral_id = referrals.submit_referral(services, ReferralInputSchema().load(referral_body()), c.caseworker).body[
        "id"
    ]
    yield c
    services.dispose()


def _offer_of(case: Case, partner_id: str) -> str:
    with case.services.uow() as uow:
        return uow.session.scalars(
            select(Assignment.id).where(
                Assignment.referral_id == case.referral_id,
                Assignment.partner_id == partner_id,
                Assignment.status == "offered",
            )
        ).one()


def test_routing_offers_the_need_and_the_referral_is_routing(case: Case) -> None:
    [offered] = case.route()
    assert case.status() == ("routing", [(MEDICAL, "offered")])
    assert case.outbox() == ["referral.submitted", "assignment.offered", "referral.routed"]
    assert case.deadlines() == [("accept", "pending")]
    assert case.route() == []  # again: nothing new to offer


def test_accepting_assigns_the_referral_meets_the_accept_deadline_and_sets_first_contact(case: Case) -> None:
    [offered] = case.route()
    body = assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    assert body["status"] == "accepted"
    assert case.status() == ("assigned", [(MEDICAL, "accepted")])
    assert case.deadlines() == [("accept", "met"), ("first_contact", "pending")]
    assert case.outbox()[-1] == "assignment.accepted"


def test_closing_an_offer_nobody_accepted_is_refused_and_nothing_changes(case: Case) -> None:
    [offered] = case.route()
    before = case.snapshot()
    for actor in (case.medical, case.supervisor):
        with pytest.raises(Conflict, match="only an accepted assignment can be closed"):
            assignments.close(case.services, CloseAssignment(offered, "services_delivered", None, ["medical"]), actor)
    assert case.snapshot() == before


def test_claiming_a_service_the_assignment_did_not_offer_is_refused(case: Case) -> None:
    [offered] = case.route()
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    before = case.snapshot()
    with pytest.raises(Conflict) as refused:
        assignments.close(
            case.services, CloseAssignment(offered, "services_delivered", None, ["shelter"]), case.medical
        )
    assert "services_delivered" in refused.value.fields
    assert case.snapshot() == before
    assignments.close(case.services, CloseAssignment(offered, "services_delivered", "done", ["medical"]), case.medical)
    assert case.status() == ("closed", [(MEDICAL, "closed")])
    assert case.outbox()[-2:] == ["assignment.closed", "referral.closed"]


def test_withdrawing_consent_on_a_closed_referral_records_it_and_keeps_it_closed(case: Case) -> None:
    [offered] = case.route()
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    assignments.close(case.services, CloseAssignment(offered, "services_delivered"), case.medical)
    referral = referrals.withdraw_consent(case.services, WithdrawConsent(case.referral_id), case.caseworker)
    assert referral.status == "closed" and referral.consent_withdrawn_at == case.clock.now()
    assert case.status() == ("closed", [(MEDICAL, "closed")])
    assert case.outbox()[-1] == "referral.consent_withdrawn"
    with pytest.raises(Forbidden):
        referrals.get_referral(case.services, case.referral_id, case.medical)
    with pytest.raises(Conflict, match="already withdrawn"):
        referrals.withdraw_consent(case.services, WithdrawConsent(case.referral_id), case.caseworker)
    with pytest.raises(Conflict, match="already closed"):
        referrals.withdraw_referral(case.services, WithdrawReferral(case.referral_id), case.caseworker)


def test_a_decline_after_accepting_routes_the_need_onward_to_another_partner(case: Case) -> None:
    [offered] = case.route()
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    assignments.decline(case.services, DeclineAssignment(offered, "no_capacity"), case.medical)
    assert case.status() == ("routing", [(MEDICAL, "declined")])  # until the router has been
    assert case.deadlines() == [("accept", "met"), ("first_contact", "met")]
    [onward] = case.route()
    assert case.status() == ("routing", [(MEDICAL, "declined"), (OTHER, "offered")])
    assert onward == _offer_of(case, OTHER)


def test_an_unanswered_offer_expires_and_the_need_goes_onward(case: Case) -> None:
    case.route()
    case.clock.advance(hours=5)  # past the high-risk accept deadline
    assert fire_due_deadlines(case.services) == 1
    assert case.status() == ("routing", [(MEDICAL, "expired")])
    assert "assignment.expired" in case.outbox()
    case.route()
    assert case.status()[1] == [(MEDICAL, "expired"), (OTHER, "offered")]


def test_withdrawing_the_referral_cancels_its_overdue_deadlines_too(case: Case) -> None:
    [offered] = case.route()
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    case.clock.advance(days=2)  # past first contact
    assert fire_due_deadlines(case.services) == 1
    assert [d["kind"] for d in deadlines.overdue(case.services, case.supervisor)["items"]] == ["first_contact"]
    referrals.withdraw_referral(case.services, WithdrawReferral(case.referral_id, "moved"), case.caseworker)
    assert case.deadlines() == [("accept", "met"), ("first_contact", "cancelled")]
    assert deadlines.overdue(case.services, case.supervisor)["items"] == []


def test_a_follow_up_meets_first_contact_and_schedules_the_next(case: Case) -> None:
    [offered] = case.route()
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    body = assignments.record_followup(case.services, RecordFollowUp(offered, "contacted", "visited"), case.medical)
    assert body["assignment_id"] == offered and body["outcome"] == "contacted"
    assert case.deadlines() == [("accept", "met"), ("first_contact", "met"), ("followup", "pending")]
    assert case.outbox()[-1] == "followup.recorded"


def test_every_access_decision_is_recorded_allowed_or_denied(case: Case) -> None:
    [offered] = case.route()
    case.recorder.entries.clear()
    with pytest.raises(Forbidden):
        assignments.accept(case.services, AcceptAssignment(offered), case.other)
    assignments.accept(case.services, AcceptAssignment(offered), case.medical)
    assert case.recorder.decisions("assignment.accept") == [
        (case.other.user_id, case.referral_id, "denied"),
        (case.medical.user_id, case.referral_id, "allowed"),
    ]
    outsider = Actor(case.caseworker.user_id + "-not", Role.CASEWORKER)
    with pytest.raises(Forbidden):
        referrals.get_referral(case.services, case.referral_id, outsider)
    assert case.recorder.decisions("referral.read")[-1] == (outsider.user_id, case.referral_id, "denied")


def test_a_role_that_may_not_submit_is_refused_before_anything_is_written(case: Case) -> None:
    case.recorder.entries.clear()
    before = case.snapshot()
    with pytest.raises(Forbidden):
        referrals.submit_referral(case.services, ReferralInputSchema().load(referral_body()), case.medical)
    assert case.snapshot() == before
    assert case.recorder.entries == [("referral.submit", case.medical.user_id, None, "denied")]
