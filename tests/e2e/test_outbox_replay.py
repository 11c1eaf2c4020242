"""On the in-memory broker the outbox is the durable record: a restart replays what no consumer finished."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from referral_service.db.models import Assignment, OutboxMessage
from tests.factories import referral_body
from tests.pipeline import InProcessPipeline


def test_published_but_unconsumed_events_are_delivered_after_a_restart(services: Any, client: Any,
                                                                       make_user: Any, add_partner: Any) -> None:
    add_partner()
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201

    before_crash = InProcessPipeline(services)
    assert before_crash.relay.publish_batch() == 1  # published to memory://, never consumed...
    before_crash.close()
    after_restart = InProcessPipeline(services)  # ...and the process "died": its queue is purged

    with services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.published_at.is_(None))) == 0
    assert after_restart.relay.replay_unconsumed() == 1
    after_restart.drain()
    # Replaying again after the router has processed it changes nothing.
    assert after_restart.relay.replay_unconsumed() == 0
    after_restart.drain()
    after_restart.close()
    with services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Assignment)) == 1
