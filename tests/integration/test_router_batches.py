"""The router's batches on the real PostgreSQL + RabbitMQ: several deliveries per transaction.

The referrals' events are queued before the routers start, so every router wakes up to a full
prefetch and routes it in batches; whatever is batched, capacity, exactly-once and the poison
rules are those of one message at a time.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Connection, Producer
from sqlalchemy import func, select

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, OutboxMessage, ProcessedMessage
from referral_service.messaging.topology import EVENTS, dead_letter_queue
from tests.integration.harness import World, wait_until
from workers.runtime import Runtime

pytestmark = pytest.mark.integration


def _queue_events(services: Services) -> None:
    """Publish every outbox row with the real relay, then stop it: the events wait in the router's queue."""
    relay = Runtime(services)
    relay.start(("relay",))
    try:

        def published() -> bool:
            with services.uow() as uow:
                left = uow.session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
                )
            return left == 0

        wait_until(published, what="every event published")
    finally:
        relay.shutdown()


def _routed(services: Services) -> dict[str, int]:
    with services.uow() as uow:
        return dict(
            uow.session.execute(select(Assignment.partner_id, func.count()).group_by(Assignment.partner_id)).all()
        )


def _batches(services: Services) -> tuple[int, int]:
    """(events processed, transactions they were processed in): a batch writes one processed_at for all."""
    with services.uow() as uow:
        rows = uow.session.execute(
            select(func.count(), func.count(func.distinct(ProcessedMessage.processed_at))).where(
                ProcessedMessage.consumer == "router"
            )
        ).one()
    return int(rows[0]), int(rows[1])


def test_competing_batched_routers_never_overfill_a_partner_and_route_each_referral_once(
    world: World, pg_services: Services, broker: Connection
) -> None:
    small = world.add_partner(capacity=7, languages=["ps"])  # everyone's first choice while it has room
    big = world.add_partner(capacity=500, languages=["en"])
    caseworker = world.caseworker()
    ids = [world.submit(caseworker, subject__cnic=None, subject__phone=None) for _ in range(80)]
    _queue_events(pg_services)

    routers = Runtime(pg_services)
    routers.start(("router", "router"))
    try:
        wait_until(lambda: sum(_routed(world.services).values()) >= len(ids), what="every referral routed")
    finally:
        routers.shutdown()
    assert _routed(world.services) == {small: 7, big: 73}
    with world.services.uow() as uow:
        doubled = uow.session.execute(
            select(Assignment.referral_id, func.count()).group_by(Assignment.referral_id).having(func.count() > 1)
        ).all()
        assert doubled == []
        assert set(uow.session.scalars(select(Assignment.referral_id))) == set(ids)
    processed, transactions = _batches(world.services)
    assert processed == len(ids)
    assert transactions < len(ids), "no transaction routed more than one referral"


def _publish_raw(conn: Connection, body: Any) -> None:
    Producer(conn.default_channel).publish(
        body, exchange=EVENTS, routing_key="referral.submitted", delivery_mode=2, serializer="json"
    )


def test_a_poison_message_in_a_batch_is_dead_lettered_alone_and_the_rest_of_the_batch_is_routed(
    world: World, pg_services: Services, broker: Connection
) -> None:
    world.add_partner(capacity=100)
    caseworker = world.caseworker()
    # More than one prefetch of good referrals: the first batch commits as one.
    first = [world.submit(caseworker, subject__cnic=None, subject__phone=None) for _ in range(30)]
    _queue_events(pg_services)
    # Behind them in the queue, in the next batch: an unknown referral, and an id that makes the
    # database itself fail (PostgreSQL refuses NUL in text), then more good referrals. That batch
    # rolls back and each of its messages meets its fate alone.
    _publish_raw(
        broker, {"event_id": str(uuid.uuid4()), "type": "referral.submitted", "referral_id": str(uuid.uuid4())}
    )
    _publish_raw(broker, {"event_id": str(uuid.uuid4()), "type": "referral.submitted", "referral_id": "a\x00b"})
    second = [world.submit(caseworker, subject__cnic=None, subject__phone=None) for _ in range(8)]
    _queue_events(pg_services)

    runtime = Runtime(pg_services)
    runtime.start(("router",))
    dead_queue = dead_letter_queue(broker)(broker.default_channel)
    dead: list[Any] = []

    def collect() -> bool:
        while (m := dead_queue.get(no_ack=False)) is not None:
            dead.append(m)
            m.ack()
        return len(dead) >= 2

    try:
        wait_until(collect, timeout=60, what="both poison messages dead-lettered")
        wait_until(lambda: sum(_routed(world.services).values()) >= 38, what="the good referrals routed")
    finally:
        runtime.shutdown()
    reasons = sorted(str(m.headers["x-dead-reason"]) for m in dead)
    assert reasons[0].startswith("failed 5 times: DataError"), reasons
    assert reasons[1] == "rejected: unknown referral", reasons
    with world.services.uow() as uow:
        routed = list(uow.session.scalars(select(Assignment.referral_id)))
    assert sorted(routed) == sorted(first + second)
    processed, transactions = _batches(world.services)
    assert processed == 38  # the poison messages never count as processed
    assert transactions < processed, "no transaction routed more than one referral"
