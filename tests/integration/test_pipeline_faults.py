"""Faults on the real PostgreSQL + RabbitMQ: killed workers, a broker restart, poison messages.

Whatever happens, every consented referral ends with exactly one assignment per needed service,
and no (referral, service) is ever offered twice.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection, Producer, Queue
from sqlalchemy import func, select, text

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, OutboxMessage, ProcessedMessage, Referral
from referral_service.domain.events import FollowUpRecorded
from referral_service.messaging.broker import connect
from referral_service.messaging.topology import EVENTS, dead_letter_queue
from tests.integration.harness import PartnerQueues, WorkerProcess, World, rabbitmqctl, wait_until
from workers.runtime import Runtime

# Restarts the shared PostgreSQL and RabbitMQ: `make test` runs it alone, after the parallel part.
pytestmark = [pytest.mark.integration, pytest.mark.restarts_servers]

BATCH = 200


def needs_for(i: int) -> list[str]:
    return ["medical", "legal_aid"] if i % 3 == 0 else ["medical"]


def expected_assignments(n: int) -> int:
    return sum(len(needs_for(i)) for i in range(n))


def assignment_count(services: Services) -> int:
    with services.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Assignment)) or 0)


class Submitter(threading.Thread):
    """Submits a batch of referrals through the service layer, as the API would, while faults happen."""

    def __init__(self, world: World, n: int) -> None:
        super().__init__(daemon=True)
        self.world, self.n = world, n
        self.caseworker = world.caseworker()
        self.ids: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.n):
                self.ids.append(
                    self.world.submit(self.caseworker, needs=needs_for(i), subject__cnic=None, subject__phone=None)
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def partners_for_batch(world: World) -> list[str]:
    return [world.add_partner(services=["medical", "legal_aid"], capacity=1000) for _ in range(3)]


def assert_every_referral_has_exactly_its_assignments(services: Services, referral_ids: list[str]) -> None:
    with services.uow() as uow:
        session = uow.session
        doubled = session.execute(
            text(
                "SELECT referral_id, service, count(*) FROM assignments WHERE status IN ('offered', 'accepted') "
                "GROUP BY referral_id, service HAVING count(*) > 1"
            )
        ).all()
        assert doubled == [], f"offered twice: {doubled[:5]}"
        rows = session.execute(select(Assignment.referral_id, Assignment.service, Assignment.status)).all()
        by_referral: dict[str, list[str]] = {}
        for referral_id, service, status in rows:
            assert status == "offered", status
            by_referral.setdefault(referral_id, []).append(service)
        needs = dict(session.execute(select(Referral.id, Referral.needs).where(Referral.id.in_(referral_ids))).all())
        assert len(needs) == len(referral_ids)
        missing = [r for r in referral_ids if sorted(by_referral.get(r, [])) != sorted(needs[r])]
        assert missing == [], f"{len(missing)} referrals without exactly their offers, e.g. {missing[:3]}"
        assert set(by_referral) == set(referral_ids)
        statuses = set(session.scalars(select(Referral.status).where(Referral.id.in_(referral_ids))))
        assert statuses == {"routing"}
        processed = session.scalar(
            select(func.count()).select_from(ProcessedMessage).where(ProcessedMessage.consumer == "router")
        )
        assert processed == len(referral_ids)  # one referral.submitted each, handled once


def offers_in_queues(
    queues: PartnerQueues, partner_ids: list[str], expected: int, timeout: float = 60
) -> dict[str, int]:
    """Assignment id → how many offer messages carried it, once every expected offer has arrived."""

    def read() -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for pid in partner_ids:
            for m in queues.drain(pid):
                if m["type"] == "assignment.offered":
                    counts[m["assignment_id"]] = counts.get(m["assignment_id"], 0) + 1
        return counts if len(counts) >= expected else None

    return dict(wait_until(read, timeout, interval=0.2, what=f"{expected} offers in the partner queues"))


def db_assignment_ids(services: Services) -> set[str]:
    with services.uow() as uow:
        return set(uow.session.scalars(select(Assignment.id)))


def run_batch_with_fault(world: World, fault: Callable[[], None], *, after: int = 40) -> list[str]:
    submitter = Submitter(world, BATCH)
    submitter.start()
    wait_until(lambda: assignment_count(world.services) >= after, timeout=60, what=f"{after} assignments")
    assert assignment_count(world.services) < expected_assignments(BATCH) // 2, "the fault came too late"
    fault()
    submitter.join(120)
    assert submitter.error is None, repr(submitter.error)
    assert len(submitter.ids) == BATCH
    wait_until(
        lambda: assignment_count(world.services) >= expected_assignments(BATCH),
        timeout=90,
        interval=0.2,
        what="every referral routed",
    )
    time.sleep(0.5)  # anything routed twice would show up now
    return submitter.ids


def test_router_killed_mid_batch_and_restarted_routes_each_referral_once(
    world: World, start_worker: Callable[..., WorkerProcess], partner_queues: PartnerQueues
) -> None:
    partner_ids = partners_for_batch(world)
    start_worker("relay")
    router = start_worker("router")

    def kill_and_restart() -> None:
        router.kill()
        assert router.proc.returncode == -9
        time.sleep(0.5)  # the batch keeps arriving while no router runs
        start_worker("router")

    referral_ids = run_batch_with_fault(world, kill_and_restart)
    assert_every_referral_has_exactly_its_assignments(world.services, referral_ids)
    counts = offers_in_queues(partner_queues, partner_ids, expected_assignments(BATCH))
    assert set(counts) == db_assignment_ids(world.services)
    assert set(counts.values()) == {1}, "an offer reached a partner twice"


def test_relay_killed_mid_batch_and_restarted_loses_and_doubles_nothing(
    world: World, start_worker: Callable[..., WorkerProcess], partner_queues: PartnerQueues
) -> None:
    partner_ids = partners_for_batch(world)
    relay = start_worker("relay")
    start_worker("router")

    def kill_and_restart() -> None:
        relay.kill()
        time.sleep(0.5)
        start_worker("relay")

    referral_ids = run_batch_with_fault(world, kill_and_restart)
    assert_every_referral_has_exactly_its_assignments(world.services, referral_ids)
    # At-least-once: a row confirmed by the broker but not yet marked may go out twice; the
    # router's processed-message table makes that harmless, and every offer arrives.
    counts = offers_in_queues(partner_queues, partner_ids, expected_assignments(BATCH))
    assert set(counts) == db_assignment_ids(world.services)
    with world.services.uow() as uow:
        assert (
            uow.session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
            == 0
        )


def test_rabbitmq_stopped_and_started_mid_batch_workers_reconnect_and_nothing_is_lost(
    world: World, start_worker: Callable[..., WorkerProcess], amqp_url: str
) -> None:
    try:
        rabbitmqctl("status", timeout=30)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot control the local RabbitMQ ({type(exc).__name__})")
    partner_ids = partners_for_batch(world)
    start_worker("relay")
    start_worker("router")
    stopped_for: list[float] = []

    def bounce_broker() -> None:
        started = time.monotonic()
        rabbitmqctl("stop_app")
        try:
            time.sleep(1.0)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup", timeout=60)
        stopped_for.append(time.monotonic() - started)

    referral_ids = run_batch_with_fault(world, bounce_broker)
    assert stopped_for and stopped_for[0] > 1.0
    assert_every_referral_has_exactly_its_assignments(world.services, referral_ids)
    # The test's own connection died with the broker: read the queues on a fresh one.
    with connect(amqp_url) as conn:
        counts = offers_in_queues(PartnerQueues(conn), partner_ids, expected_assignments(BATCH))
    assert set(counts) == db_assignment_ids(world.services)


def _publish_raw(conn: Connection, body: Any, **kwargs: Any) -> None:
    Producer(conn.default_channel).publish(
        body, exchange=EVENTS, routing_key="referral.submitted", delivery_mode=2, **kwargs
    )


def test_poison_messages_are_dead_lettered_with_a_reason_while_the_rest_flows(
    world: World, runtime: Runtime, broker: Connection, partner_queues: PartnerQueues
) -> None:
    pid = world.add_partner(services=["medical", "legal_aid"], capacity=100)
    caseworker = world.caseworker()
    good: list[str] = []
    poison: list[tuple[dict[str, Any], str]] = [
        (
            dict(body=b"\x00\xff not json {", content_type="application/json", content_encoding="binary"),
            "undecodable: ",
        ),
        (dict(body="plain text", content_type="text/plain", content_encoding="utf-8"), "undecodable: "),
        (dict(body={"type": "referral.submitted", "referral_id": "x"}, serializer="json"), "malformed: KeyError"),
        (
            dict(
                body={"event_id": str(uuid.uuid4()), "type": "referral.exploded", "referral_id": "x"}, serializer="json"
            ),
            "malformed: PoisonMessage",
        ),
        (
            dict(
                body={"event_id": str(uuid.uuid4()), "type": "referral.submitted", "referral_id": str(uuid.uuid4())},
                serializer="json",
            ),
            "rejected: unknown referral",
        ),
        (
            dict(
                body={"event_id": str(uuid.uuid4()), "type": "referral.submitted", "referral_id": 7}, serializer="json"
            ),
            "rejected: no referral_id",
        ),
        # Makes the handler itself fail every time (PostgreSQL refuses NUL in text): retried, then parked.
        (
            dict(
                body={"event_id": str(uuid.uuid4()), "type": "referral.submitted", "referral_id": "a\x00b"},
                serializer="json",
            ),
            "failed 5 times: DataError",
        ),
    ]
    for i, (kwargs, _) in enumerate(poison):
        good.append(world.submit(caseworker))
        _publish_raw(broker, **kwargs)
        good.append(world.submit(caseworker, needs=needs_for(i)))

    dead_queue = dead_letter_queue(broker)(broker.default_channel)
    dead: list[Any] = []

    def collect() -> bool:
        while (m := dead_queue.get(no_ack=False)) is not None:
            dead.append(m)
            m.ack()
        return len(dead) >= len(poison)

    wait_until(collect, timeout=30, what="every poison message dead-lettered")
    reasons = sorted(str(m.headers["x-dead-reason"]) for m in dead)
    for (_, expected), got in zip(sorted(poison, key=lambda p: p[1]), reasons, strict=True):
        assert got.startswith(expected), (got, expected)
    assert all(m.headers["x-consumer"] == "router" for m in dead)
    assert all(m.headers["x-original-routing-key"] == "referral.submitted" for m in dead)
    # Parked as they came, bytes and all, for an operator to look at.
    assert b"\x00\xff not json {" in [m.body for m in dead]

    wait_until(
        lambda: assignment_count(world.services) >= sum(len(needs_for(i)) + 1 for i in range(len(poison))),
        what="the good referrals routed",
    )
    assert_every_referral_has_exactly_its_assignments(world.services, good)
    assert runtime.threads and all(t.is_alive() for t in runtime.threads), "a poison message stopped a worker"
    assert pid


def test_redelivered_event_does_nothing_twice(world: World, runtime: Runtime, broker: Connection) -> None:
    first, second = world.add_partner(languages=["ps"]), world.add_partner(languages=["en"])
    caseworker = world.caseworker()
    referral_id = world.submit(caseworker)
    wait_until(lambda: assignment_count(world.services) == 1, what="offer")
    with world.services.uow() as uow:
        submitted = (
            uow.session.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.aggregate_id == referral_id, OutboxMessage.type == "referral.submitted"
                )
            )
            .one()
            .body
        )
        # Free the first partner's slot behind the router's back: a second routing would now offer again.
        uow.session.execute(
            text("UPDATE assignments SET status = 'expired' WHERE referral_id = :r"), {"r": referral_id}
        )
        uow.commit()

    _publish_raw(broker, body=submitted, serializer="json")  # the same event, delivered again
    marker = world.submit(caseworker)  # handled after the duplicate: one router, one queue
    wait_until(lambda: assignment_count(world.services) == 2, what="the marker's offer")
    time.sleep(0.3)
    with world.services.uow() as uow:
        statuses = list(uow.session.scalars(select(Assignment.status).where(Assignment.referral_id == referral_id)))
        assert statuses == ["expired"]
        assert (
            uow.session.scalar(
                select(func.count())
                .select_from(ProcessedMessage)
                .where(ProcessedMessage.event_id == submitted["event_id"])
            )
            == 1
        )
    assert marker and first and second


def test_two_relays_keep_each_referrals_events_in_order_and_lose_none(
    world: World, start_worker: Callable[..., WorkerProcess], broker: Connection
) -> None:
    tap = Queue(f"tap-{uuid.uuid4().hex[:8]}", exchange=EVENTS, routing_key="#", auto_delete=True, durable=False)
    tap(broker.default_channel).declare()
    referrals = [str(uuid.uuid4()) for _ in range(60)]
    relays = [start_worker("relay"), start_worker("relay")]

    # Written while both relays poll, interleaved across referrals and committed one by one, as
    # real traffic is, so the relays compete for the rows of the same referrals.
    expected: dict[str, list[str]] = {r: [] for r in referrals}
    for step in range(6):
        for r in referrals:
            with world.services.uow() as uow:
                event = FollowUpRecorded(
                    referral_id=r, assignment_id=str(uuid.uuid4()), followup_id=str(step), outcome="contacted"
                )
                uow.emit(event)
                uow.commit()
            expected[r].append(event.event_id)
    total = sum(map(len, expected.values()))
    got: dict[str, list[str]] = {r: [] for r in referrals}
    seen = 0
    bound = tap(broker.default_channel)

    def read() -> bool:
        nonlocal seen
        while (m := bound.get(no_ack=True)) is not None:
            body = m.decode()
            got[body["referral_id"]].append(body["event_id"])
            seen += 1
        return seen >= total

    wait_until(read, timeout=60, what=f"{total} events on the tap")
    for r in referrals:
        deduplicated = list(dict.fromkeys(got[r]))
        assert deduplicated == expected[r], f"referral {r}: events out of order or missing"
    assert seen == total, "an event was published twice without any fault"
    assert all(p.proc.poll() is None for p in relays)


def test_competing_routers_never_overfill_a_partner(world: World, pg_services: Services, broker: Connection) -> None:
    small = world.add_partner(capacity=5, languages=["ps"])  # everyone's first choice while it has room
    big = world.add_partner(capacity=500, languages=["en"])
    caseworker = world.caseworker()
    runtime = Runtime(pg_services)
    runtime.start(("relay", "router", "router", "router"))
    try:
        ids = [world.submit(caseworker, subject__cnic=None, subject__phone=None) for _ in range(40)]
        wait_until(lambda: assignment_count(world.services) == len(ids), what="every referral routed")
    finally:
        runtime.shutdown()
    with world.services.uow() as uow:
        per_partner = dict(
            uow.session.execute(select(Assignment.partner_id, func.count()).group_by(Assignment.partner_id)).all()
        )
    assert per_partner == {small: 5, big: 35}
    assert_every_referral_has_exactly_its_assignments(world.services, ids)
