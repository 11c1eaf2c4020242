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
from referral_service.db.models import Notification
from referral_service.services.assignments import route_open_needs
from referral_service.services.webhooks import register_webhook
from tests.integration.harness import World
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
