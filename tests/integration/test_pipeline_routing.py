"""Submit → relay → RabbitMQ → router → offer in the partner's own queue, on PostgreSQL + RabbitMQ."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from referral_service.app import create_app
from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, Referral, RoutingDecision
from referral_service.domain.commands import DeclineAssignment, WithdrawConsent
from referral_service.services import assignments
from referral_service.services.referrals import withdraw_consent
from tests.integration.harness import PartnerQueues, World, wait_until
from workers.runtime import Runtime

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Offer:
    id: str
    partner_id: str
    service: str
    status: str
    reasons: list[str]


def offers(services: Services, referral_id: str, status: str = "offered") -> list[Offer]:
    with services.uow() as uow:
        return [
            Offer(a.id, a.partner_id, a.service, a.status, list(a.reasons))
            for a in uow.session.scalars(
                select(Assignment)
                .where(Assignment.referral_id == referral_id, Assignment.status == status)
                .order_by(Assignment.offered_at)
            )
        ]


def wait_offer(services: Services, referral_id: str, count: int = 1) -> list[Offer]:
    return list(
        wait_until(
            lambda: o if len(o := offers(services, referral_id)) >= count else None,
            what=f"{count} offer(s) for {referral_id}",
        )
    )


def referral_status(services: Services, referral_id: str) -> str:
    with services.uow() as uow:
        return uow.session.get(Referral, referral_id).status  # type: ignore[union-attr]


def decision(services: Services, referral_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    with services.uow() as uow:
        row = uow.session.scalars(select(RoutingDecision).where(RoutingDecision.referral_id == referral_id)).one()
        return row.chosen_partner_id, list(row.considered)


def is_offer_of(assignment: Offer) -> Any:
    return lambda m: m["type"] == "assignment.offered" and m["assignment_id"] == assignment.id


def test_submitted_referral_is_offered_to_the_right_partner_and_lands_in_its_queue(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    right = world.add_partner(districts=["Peshawar"])
    elsewhere = world.add_partner(provinces=["Balochistan"], districts=["Quetta"])
    referral_id = world.submit(world.caseworker())

    (offer,) = wait_offer(world.services, referral_id)
    assert offer.partner_id == right and offer.service == "medical"
    assert "covers Peshawar" in offer.reasons and "offers medical" in offer.reasons
    (message,) = partner_queues.wait_for(right, is_offer_of(offer))
    assert message["referral_id"] == referral_id and message["partner_id"] == right
    assert message["service"] == "medical" and message["risk_level"] == "high" and message["accept_by"]
    assert {"event_id", "type", "version", "occurred_at"} <= set(message)
    assert partner_queues.drain(elsewhere) == []
    assert referral_status(world.services, referral_id) == "routing"


def test_each_needed_service_is_offered_to_its_own_partner(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    medical = world.add_partner(services=["medical"])
    legal = world.add_partner(services=["legal_aid"])
    referral_id = world.submit(world.caseworker(), needs=["medical", "legal_aid"])

    got = {o.service: o.partner_id for o in wait_offer(world.services, referral_id, 2)}
    assert got == {"medical": medical, "legal_aid": legal}
    partner_queues.wait_for(medical, lambda m: m["service"] == "medical")
    partner_queues.wait_for(legal, lambda m: m["service"] == "legal_aid")


def test_minor_is_offered_only_to_a_partner_that_accepts_minors(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    # The adults-only partner speaks the subject's language and would otherwise win.
    adults = world.add_partner(accepts_minors=False, languages=["ps"])
    youth = world.add_partner(accepts_minors=True, languages=["en"])
    referral_id = world.submit(world.caseworker(), subject__date_of_birth="2014-02-03")

    (offer,) = wait_offer(world.services, referral_id)
    assert offer.partner_id == youth and "accepts minors" in offer.reasons
    partner_queues.wait_for(youth, is_offer_of(offer))
    assert partner_queues.drain(adults) == []


def test_female_staff_preference_is_honoured(world: World, runtime: Runtime, partner_queues: PartnerQueues) -> None:
    men_only = world.add_partner(staff_sex=["male"], languages=["ps"])
    women = world.add_partner(staff_sex=["female"], languages=["en"])
    referral_id = world.submit(world.caseworker(), preferences__staff_sex="female")

    (offer,) = wait_offer(world.services, referral_id)
    assert offer.partner_id == women and "has female staff" in offer.reasons
    partner_queues.wait_for(women, is_offer_of(offer))
    assert partner_queues.drain(men_only) == []
    skipped = {
        c["partner_id"]: c["reasons"] for c in decision(world.services, referral_id)[1] if c["verdict"] == "skipped"
    }
    assert skipped == {men_only: ["no female staff"]}


def test_partner_at_capacity_is_passed_over(world: World, runtime: Runtime, partner_queues: PartnerQueues) -> None:
    small = world.add_partner(capacity=1, languages=["ps"])  # preferred while it has room
    big = world.add_partner(capacity=20, languages=["en"])
    caseworker = world.caseworker()
    first = world.submit(caseworker)
    assert wait_offer(world.services, first)[0].partner_id == small
    second = world.submit(caseworker)

    (offer,) = wait_offer(world.services, second)
    assert offer.partner_id == big
    partner_queues.wait_for(big, is_offer_of(offer))
    assert {"partner_id": small, "verdict": "skipped", "reasons": ["at capacity 1/1"], "score": None} in decision(
        world.services, second
    )[1]


def test_district_falls_back_to_a_partner_covering_the_province(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    mardan = world.add_partner(districts=["Mardan"])
    referral_id = world.submit(world.caseworker(), subject__district="Peshawar")

    (offer,) = wait_offer(world.services, referral_id)
    assert offer.partner_id == mardan
    assert "covers Khyber Pakhtunkhwa (not Peshawar itself)" in offer.reasons
    partner_queues.wait_for(mardan, is_offer_of(offer))


def test_no_partner_left_makes_the_referral_unroutable(
    world: World, runtime: Runtime, partner_queues: PartnerQueues, broker: Connection
) -> None:
    peshawar = world.add_partner()
    referral_id = world.submit(world.caseworker(), subject__province="Balochistan", subject__district="Quetta")

    wait_until(lambda: referral_status(world.services, referral_id) == "unroutable", what="unroutable")
    assert offers(world.services, referral_id) == []
    chosen, considered = decision(world.services, referral_id)
    assert chosen is None
    assert considered == [
        {"partner_id": peshawar, "verdict": "skipped", "reasons": ["does not cover Quetta"], "score": None}
    ]
    assert partner_queues.drain(peshawar) == []


def test_referral_without_consent_is_never_routed(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    pid = world.add_partner()
    withheld = world.submit(world.caseworker(), consent__given=False, consent__share=[])
    consented = world.submit(world.caseworker())
    wait_offer(world.services, consented)
    assert offers(world.services, withheld) == []
    assert all(m["referral_id"] != withheld for m in partner_queues.drain(pid))
    assert referral_status(world.services, withheld) == "submitted"


def test_decline_routes_to_next_partner_and_then_unroutable(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    first_choice = world.add_partner(languages=["ps"])
    second_choice = world.add_partner(languages=["en"])
    referral_id = world.submit(world.caseworker())
    (offer,) = wait_offer(world.services, referral_id)
    assert offer.partner_id == first_choice

    staff, _ = world.partner_staff(first_choice)
    assignments.decline(world.services, DeclineAssignment(offer.id, "no_capacity", "full this week"), staff)
    (onward,) = wait_offer(world.services, referral_id)
    assert onward.partner_id == second_choice and onward.id != offer.id
    partner_queues.wait_for(second_choice, is_offer_of(onward))

    staff2, _ = world.partner_staff(second_choice)
    assignments.decline(world.services, DeclineAssignment(onward.id, "out_of_area"), staff2)
    wait_until(lambda: referral_status(world.services, referral_id) == "unroutable", what="unroutable")
    assert offers(world.services, referral_id) == []
    assert len(offers(world.services, referral_id, "declined")) == 2


def test_two_staff_accepting_at_once_get_one_200_and_one_409(
    world: World, runtime: Runtime, pg_services: Services
) -> None:
    pid = world.add_partner()
    caseworker = world.caseworker()
    referral_ids = [world.submit(caseworker) for _ in range(5)]
    tokens = [world.partner_staff(pid)[1] for _ in range(2)]
    app = create_app(pg_services, {"TESTING": True})

    def accept_together(assignment_id: str) -> list[int]:
        barrier = threading.Barrier(len(tokens))
        codes: list[int] = []

        def accept(token: str) -> None:
            client = app.test_client()  # each request runs on its own pooled connection
            barrier.wait()
            response = client.post(
                f"/api/v1/assignments/{assignment_id}/accept", headers={"Authorization": f"Bearer {token}"}
            )
            codes.append(response.status_code)

        threads = [threading.Thread(target=accept, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return codes

    for referral_id in referral_ids:
        (offer,) = wait_offer(world.services, referral_id)
        codes = accept_together(offer.id)
        assert sorted(codes) == [200, 409], codes
        assert [o.status for o in offers(world.services, referral_id, "accepted")] == ["accepted"]
        assert referral_status(world.services, referral_id) == "assigned"


def test_withdrawing_consent_pulls_back_offers_and_tells_the_partner(
    world: World, runtime: Runtime, partner_queues: PartnerQueues
) -> None:
    medical = world.add_partner(services=["medical"])
    legal = world.add_partner(services=["legal_aid"])
    caseworker = world.caseworker()
    referral_id = world.submit(caseworker, needs=["medical", "legal_aid"])
    placed = wait_offer(world.services, referral_id, 2)
    for a in placed:
        partner_queues.wait_for(a.partner_id, is_offer_of(a))

    withdraw_consent(world.services, WithdrawConsent(referral_id), caseworker)

    for a in placed:
        (pulled,) = partner_queues.wait_for(
            a.partner_id, lambda m, a=a: m["type"] == "assignment.withdrawn" and m["assignment_id"] == a.id
        )
        assert pulled["reason"] == "consent_withdrawn" and pulled["referral_id"] == referral_id
    assert offers(world.services, referral_id) == []
    assert {o.partner_id for o in offers(world.services, referral_id, "withdrawn")} == {medical, legal}
    assert referral_status(world.services, referral_id) == "withdrawn"
