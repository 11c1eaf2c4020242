"""On the in-memory broker the outbox is the durable record: a restart replays what no consumer finished."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from referral_service.db.models import Assignment, OutboxMessage
from tests.factories import referral_body
from tests.pipeline import InProcessPipeline


def test_published_but_unconsumed_events_are_delivered_after_a_restart(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201

    before_crash = InProcessPipeline(services)
    assert before_crash.relay.publish_batch() == 1  # published to memory://, never consumed...
    before_crash.close()
    after_restart = InProcessPipeline(services)  # ...and the process "died": its queue is purged

    with services.uow() as uow:
        assert (
            uow.session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
            == 0
        )
    assert after_restart.relay.replay_unconsumed() == 1
    after_restart.drain()
    # Replaying again after the router has processed it changes nothing.
    assert after_restart.relay.replay_unconsumed() == 0
    after_restart.drain()
    after_restart.close()
    with services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Assignment)) == 1


def test_published_rows_are_pruned_after_the_retention_period(
    services: Any, client: Any, clock: Any, make_user: Any
) -> None:
    from workers.relay import RETENTION

    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
    pipeline = InProcessPipeline(services)
    pipeline.drain()
    assert pipeline.relay.prune() == 0  # just published: kept
    with services.uow() as uow:
        published = uow.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_not(None))
        )
    assert published >= 2  # referral.submitted, then referral.unroutable (no partner exists)
    clock.advance(seconds=RETENTION.total_seconds() + 1)
    second = referral_body(subject__cnic="17301-0000000-1", subject__phone=None)
    assert client.post("/api/v1/referrals", json=second, headers=cw.headers).status_code == 201
    assert pipeline.relay.prune() == published  # the old published rows go; the new unpublished one stays
    pipeline.close()
    with services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_pruning_keeps_a_partner_notice_the_notify_worker_has_not_taken_up_yet(
    services: Any, client: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    from referral_service.services import notifications
    from workers.relay import RETENTION

    add_partner()
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
    pipeline = InProcessPipeline(services)
    pipeline.drain()  # routed: the offer's notice is published to the partner's queue
    clock.advance(seconds=RETENTION.total_seconds() + 1)  # the notify worker was down for a week
    pruned = pipeline.relay.prune()
    pipeline.close()
    with services.uow() as uow:
        kept = uow.session.execute(select(OutboxMessage.type, OutboxMessage.notify_pending)).all()
    assert kept == [("assignment.offered", True)]
    assert pruned >= 3  # submitted, routed, the offer on the events exchange
    # Once taken up (here the partner has no webhook or e-mail), the next prune takes it too.
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 0, "parked": 0}
    relay = InProcessPipeline(services)
    assert relay.relay.prune() == 1
    relay.close()


def test_on_the_in_process_broker_offers_are_not_left_on_partner_queues_no_one_can_reach(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    from kombu.transport import memory

    from referral_service.messaging.names import partner_queue_name

    add_partner()
    cw = make_user("caseworker")
    for n in range(3):
        body = referral_body(subject__cnic=f"17301-000000{n}-1", subject__phone=None)
        assert client.post("/api/v1/referrals", json=body, headers=cw.headers).status_code == 201
    pipeline = InProcessPipeline(services)
    pipeline.drain()
    pipeline.close()
    queue = memory.Channel.queues.get(partner_queue_name("p-peshawar-medical"))
    assert queue is None or queue.qsize() == 0  # a week of offers would otherwise stay in memory
    with services.uow() as uow:
        offers = uow.session.scalars(select(Assignment.id)).all()
        unpublished = uow.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        )
    assert len(offers) == 3 and unpublished == 0
