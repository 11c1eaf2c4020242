"""Webhook delivery on PostgreSQL: two `worker notify` processes compete for the same rows (FOR UPDATE
SKIP LOCKED lease) and every offer reaches a real receiver once, signed; a worker killed with SIGKILL
in the middle loses nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.bootstrap import Services
from referral_service.config import SmtpRelay
from referral_service.db.models import Notification, OutboxMessage
from referral_service.services import notifications
from referral_service.services.assignments import route_open_needs
from referral_service.services.webhooks import register_webhook
from tests.integration.harness import World, unique_id
from tests.receivers import webhook_receiver

pytestmark = pytest.mark.integration

OFFERS = 30


def _route(services: Services, referral_id: str) -> None:
    with services.uow() as uow:
        assert route_open_needs(uow, services, referral_id)
        uow.commit()


def _statuses(services: Services) -> Counter[str]:
    with services.uow() as uow:
        rows = uow.session.execute(select(Notification.status, func.count()).group_by(Notification.status)).all()
    return Counter({status: count for status, count in rows})


def _wait(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def private_webhooks(pg_services: Services) -> None:
    pg_services.settings = replace(pg_services.settings, webhook_allow_private=True)  # the receiver is local


@pytest.fixture
def offers(pg_services: Services) -> Callable[[str], list[str]]:
    world = World(pg_services)

    def _make(partner_id: str) -> list[str]:
        caseworker = world.caseworker()
        referrals = [world.submit(caseworker, subject__cnic=None, subject__phone=None) for _ in range(OFFERS)]
        for r in referrals:
            _route(pg_services, r)
        return referrals

    return _make


def test_two_notify_workers_on_postgresql_deliver_each_offer_once_signed(
    pg_services: Services, start_worker: Any, offers: Callable[[str], list[str]]
) -> None:
    world = World(pg_services)
    partner_id = world.add_partner(capacity=1000)
    with webhook_receiver(keep_alive=True) as receiver:
        receiver.secret = register_webhook(pg_services, partner_id, receiver.url)["secret"]
        receiver.delays = [0.1] * OFFERS  # slow enough that both workers' rounds overlap
        # Small rounds, so that the two workers take turns at the same rows.
        env = {"REFERRAL_WEBHOOK_ALLOW_PRIVATE": "1", "REFERRAL_NOTIFY_BATCH": "4"}
        workers = [start_worker("notify", **env), start_worker("notify", **env)]
        offers(partner_id)
        _wait(lambda: _statuses(pg_services) == {"delivered": OFFERS})
        time.sleep(1.5)  # a second delivery, if any, would arrive within a poll
        for w in workers:
            w.stop()

    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert len(ids) == OFFERS and set(ids.values()) == {1}, ids.most_common(3)
    assert all(r.error is None for r in receiver.received), [r.error for r in receiver.received][:3]
    assert {r.verified["type"] for r in receiver.received} == {"assignment.offered"}


def test_a_notify_worker_killed_mid_round_on_postgresql_loses_nothing(
    pg_services: Services, start_worker: Any, offers: Callable[[str], list[str]]
) -> None:
    world = World(pg_services)
    partner_id = world.add_partner(capacity=1000)
    with webhook_receiver() as receiver:
        receiver.secret = register_webhook(pg_services, partner_id, receiver.url)["secret"]
        receiver.delays = [0.2] * OFFERS  # a round of 30 takes 6 s: time to kill it in the middle
        offers(partner_id)
        # A short lease, so that the killed worker's rows come due again within the test.
        env = {"REFERRAL_WEBHOOK_ALLOW_PRIVATE": "1", "REFERRAL_NOTIFY_LEASE_SECONDS": "3"}
        first = start_worker("notify", **env)
        _wait(lambda: len(receiver.received) >= 5)
        first.kill()
        sent_before_kill = {r.headers["webhook-id"] for r in receiver.received}
        assert _statuses(pg_services) == {"pending": OFFERS}  # the round's answers died with it
        second = start_worker("notify", **env)
        _wait(lambda: _statuses(pg_services) == {"delivered": OFFERS})
        second.stop()

    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert len(ids) == OFFERS  # every offer arrived
    # Only what the killed worker had sent came twice (at least once, same id: receivers deduplicate).
    assert {i for i, n in ids.items() if n > 1} <= sent_before_kill
    assert all(r.error is None for r in receiver.received)


def test_overdue_reminders_for_one_partner_join_one_digest_row_on_postgresql(pg_services: Services) -> None:
    """The digest is read and extended in the notify worker's Core transaction (`SELECT … FOR UPDATE`, a
    JSON payload written back): on PostgreSQL too, reminders of two rounds end up in one row, once each."""
    world = World(pg_services)
    partner_id = world.add_partner(capacity=1000, contact_email="intake@partner.example.org")
    pg_services.settings = replace(pg_services.settings, smtp=SmtpRelay("127.0.0.1", 9, False))
    referral_id, assignment_id = unique_id(), unique_id()

    def overdue(event_id: str) -> OutboxMessage:
        return OutboxMessage(
            event_id=event_id,
            type="followup.overdue",
            aggregate_id=referral_id,
            exchange="partners",
            routing_key=f"partner.{partner_id}",
            body={
                "type": "followup.overdue",
                "event_id": event_id,
                "referral_id": referral_id,
                "partner_id": partner_id,
                "assignment_id": assignment_id,
                "occurred_at": "2026-12-01T10:00:00+00:00",
                "risk_level": "high",
                "due_at": "2026-12-01T09:00:00+00:00",
            },
            notify_pending=True,
        )

    first, second, third = unique_id(), unique_id(), unique_id()
    with pg_services.uow() as uow:
        uow.session.add_all([overdue(first), overdue(second)])
        uow.commit()
    notifications.deliver_due(pg_services)
    with pg_services.uow() as uow:
        uow.session.add(overdue(third))
        uow.commit()
    notifications.deliver_due(pg_services)
    notifications.deliver_due(pg_services)  # nothing left to take up: the digest is unchanged
    with pg_services.uow() as uow:
        rows = uow.session.execute(
            select(Notification.channel, Notification.status, Notification.payload).where(
                Notification.partner_id == partner_id
            )
        ).all()
        pending = uow.session.scalar(select(func.count()).where(OutboxMessage.notify_pending.is_(True)))
    assert [tuple(r) for r in rows] == [
        ("digest", "pending", {"event_ids": [first, second, third], "referral_ids": [referral_id]})
    ]
    assert pending == 0
