"""Every message that crosses RabbitMQ in a full scenario carries identifiers only."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from kombu import Connection, Queue
from sqlalchemy import select

from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Assignment, Referral
from referral_service.domain.commands import (
    AcceptAssignment,
    CloseAssignment,
    DeclineAssignment,
    RecordFollowUp,
    WithdrawConsent,
)
from referral_service.messaging.topology import EVENTS, dead_letter_queue
from referral_service.services import assignments
from referral_service.services.deadlines import fire_due_deadlines
from referral_service.services.referrals import withdraw_consent
from referral_service.services.subjects import erase_subject
from tests.conftest import FakeClock
from tests.integration.harness import PartnerQueues, World, wait_until
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

SUBJECT = {
    "full_name": "Gulalai Yousafzai-Marwat",
    "date_of_birth": "1987-11-23",
    "cnic": "42101-7654321-9",
    "phone": "+923331112233",
    "address": "Flat 7, Gulshan-e-Iqbal Block 13, near the Safari Park gate",
}
NARRATIVE = "Hurt at the Saddar checkpoint explosion, lost her brother Faizan"
NOTES = (
    "declined: she called from her cousin Rubina's number",
    "met her at her sister's home in Kohat",
    "closed: moved to her aunt Shabnam in Mardan",
)

FORBIDDEN = [
    SUBJECT["full_name"],
    "Gulalai",
    "Yousafzai",
    SUBJECT["date_of_birth"],
    "1987-11",
    "23/11/1987",
    SUBJECT["cnic"],
    SUBJECT["cnic"].replace("-", ""),
    SUBJECT["phone"],
    "03331112233",
    "3331112233",
    SUBJECT["address"],
    "Gulshan-e-Iqbal",
    "Safari Park",
    NARRATIVE,
    "Saddar checkpoint",
    "Faizan",
    *NOTES,
    "Rubina",
    "Shabnam",
]


def test_no_message_on_the_broker_carries_personal_data(
    world: World, runtime: Runtime, broker: Connection, partner_queues: PartnerQueues, pg_services: Services
) -> None:
    tap = Queue(f"tap-{uuid.uuid4().hex[:8]}", exchange=EVENTS, routing_key="#", auto_delete=True, durable=False)
    tap(broker.default_channel).declare()
    first = world.add_partner(services=["medical", "psychosocial"], languages=["ps"])
    second = world.add_partner(services=["medical", "psychosocial"], languages=["en"])
    caseworker = world.caseworker()
    overrides = {f"subject__{k}": v for k, v in SUBJECT.items()}
    referral_id = world.submit(
        caseworker,
        needs=["medical", "psychosocial"],
        incident__narrative=NARRATIVE,
        consent__share=["contact", "identity", "incident"],
        **overrides,
    )
    # The same person again (CNIC match) and a third referral whose consent is withdrawn.
    repeat_id = world.submit(caseworker, needs=["medical"], **overrides)
    withdrawn_id = world.submit(caseworker, needs=["psychosocial"], **overrides)

    def open_offers(rid: str) -> list[tuple[str, str, str]]:
        with pg_services.uow() as uow:
            return [
                (a.id, a.partner_id, a.service)
                for a in uow.session.scalars(
                    select(Assignment).where(Assignment.referral_id == rid, Assignment.status == "offered")
                )
            ]

    placed = wait_until(lambda: o if len(o := open_offers(referral_id)) == 2 else None, what="two offers")
    wait_until(lambda: open_offers(repeat_id) and open_offers(withdrawn_id), what="the other offers")
    staff = {pid: world.partner_staff(pid)[0] for pid in (first, second)}
    medical = next(a for a in placed if a[2] == "medical")
    assignments.decline(pg_services, DeclineAssignment(medical[0], "other", NOTES[0]), staff[medical[1]])
    onward = wait_until(lambda: [a for a in open_offers(referral_id) if a[2] == "medical"], what="onward offer")[0]
    assignments.accept(pg_services, AcceptAssignment(onward[0]), staff[onward[1]])
    assignments.record_followup(pg_services, RecordFollowUp(onward[0], "contacted", NOTES[1]), staff[onward[1]])
    assignments.close(pg_services, CloseAssignment(onward[0], "services_delivered", NOTES[2]), staff[onward[1]])
    withdraw_consent(pg_services, WithdrawConsent(withdrawn_id), caseworker)
    (repeat_offer,) = open_offers(repeat_id)
    assignments.accept(pg_services, AcceptAssignment(repeat_offer[0]), staff[repeat_offer[1]])  # and never contacts her

    # A month later: unanswered offers expire (and route onward), missed follow-ups become overdue.
    later = bootstrap(pg_services.settings, clock=FakeClock(FakeClock().now() + timedelta(days=30)))
    try:
        while fire_due_deadlines(later):
            pass
    finally:
        later.dispose()
    with pg_services.uow() as uow:
        subject_id = uow.session.get(Referral, referral_id).subject_id  # type: ignore[union-attr]
    erase_subject(pg_services, subject_id)

    bodies: list[str] = []
    types: set[str] = set()
    bound = tap(broker.default_channel)

    def drain_tap() -> bool:
        while (m := bound.get(no_ack=True)) is not None:
            raw = m.body.decode() if isinstance(m.body, bytes) else str(m.body)
            bodies.append(raw)
            types.add(m.decode()["type"])
        return "subject.erased" in types

    wait_until(drain_tap, what="the whole scenario on the tap queue")
    expected = {
        "referral.submitted",
        "referral.routed",
        "assignment.offered",
        "assignment.declined",
        "assignment.accepted",
        "followup.recorded",
        "assignment.closed",
        "assignment.withdrawn",
        "referral.consent_withdrawn",
        "assignment.expired",
        "followup.overdue",
        "subject.erased",
    }
    assert expected <= types, expected - types
    for pid in (first, second):
        partner_queues.drain(pid)
    partner_types = {m["type"] for msgs in partner_queues.seen.values() for m in msgs}
    assert {"assignment.offered", "assignment.withdrawn", "assignment.expired"} <= partner_types
    dead = dead_letter_queue(broker)(broker.default_channel)
    while (m := dead.get(no_ack=True)) is not None:
        bodies.append(m.body.decode() if isinstance(m.body, bytes) else str(m.body))

    everything = [*bodies, *partner_queues.raw]
    assert len(everything) > 25
    leaks = sorted({value for value in FORBIDDEN for body in everything if value.casefold() in body.casefold()})
    assert leaks == [], f"personal data on the broker: {leaks}"
