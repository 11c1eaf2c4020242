"""Outbox relay: publishes committed events, in order per referral, with publisher confirms.

At-least-once: a row is marked published in the same transaction that claimed it, after the
broker confirmed it. If the process dies between the confirm and the commit, the row is
published again; consumers are idempotent by event id, so that is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import aliased

from referral_service.bootstrap import Services
from referral_service.db.models import OutboxMessage, ProcessedMessage
from referral_service.db.session import EVENTS_EXCHANGE, PARTNERS_EXCHANGE
from referral_service.messaging.broker import KombuPublisher, Publisher
from referral_service.messaging.topology import CONSUMER_GROUPS, EVENTS, PARTNERS, partner_queue

log = logging.getLogger(__name__)
EXCHANGES = {EVENTS_EXCHANGE: EVENTS, PARTNERS_EXCHANGE: PARTNERS}
RETENTION = timedelta(days=7)
PRUNE_EVERY_SECONDS = 3600.0


class OutboxRelay:
    def __init__(self, services: Services, publisher: Publisher, *, batch_size: int = 200,
                 poll_interval: float = 0.05) -> None:
        self.services = services
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._declared_partner_queues: set[str] = set()
        self._last_prune = float("-inf")

    def _claim_query(self, dialect: str) -> Any:
        query = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        if dialect == "postgresql":
            # Several relays: each takes rows nobody else holds, and only a referral's oldest
            # unpublished row, so events of one referral never overtake each other.
            earlier = aliased(OutboxMessage)
            query = query.where(~exists().where(and_(
                earlier.aggregate_id == OutboxMessage.aggregate_id,
                earlier.published_at.is_(None),
                earlier.id < OutboxMessage.id,
            ))).with_for_update(skip_locked=True)
        return query.order_by(OutboxMessage.id).limit(self.batch_size)

    def publish_batch(self) -> int:
        """Publish up to `batch_size` pending rows; returns how many were published."""
        with self.services.uow() as uow:
            session = uow.session
            rows = session.scalars(self._claim_query(session.get_bind().dialect.name)).all()
            now = self.services.clock.now()
            for row in rows:
                self._ensure_partner_queue(row)
                self.publisher.publish(EXCHANGES[row.exchange], row.routing_key, row.body, message_id=row.event_id)
                row.published_at = now
            session.commit()
            return len(rows)

    def _ensure_partner_queue(self, row: OutboxMessage) -> None:
        # A direct exchange drops a message that no queue is bound for: bind before the first offer.
        if row.exchange != PARTNERS_EXCHANGE or row.routing_key in self._declared_partner_queues:
            return
        if isinstance(self.publisher, KombuPublisher):
            partner_id = row.routing_key.removeprefix("partner.")
            conn = self.publisher.connection
            partner_queue(conn, partner_id)(conn.default_channel).declare()
        self._declared_partner_queues.add(row.routing_key)

    def replay_unconsumed(self) -> int:
        """After a restart on the in-memory broker, publish again what no consumer finished.

        memory:// loses queued messages with the process, so the outbox is the durable record:
        rows whose consumers have not recorded them as processed go back to pending.
        """
        replayed = 0
        with self.services.uow() as uow:
            for group, keys in CONSUMER_GROUPS.items():
                done = select(ProcessedMessage.event_id).where(ProcessedMessage.consumer == group,
                                                               ProcessedMessage.event_id == OutboxMessage.event_id)
                rows = uow.session.scalars(select(OutboxMessage).where(
                    OutboxMessage.published_at.is_not(None), OutboxMessage.exchange == EVENTS_EXCHANGE,
                    OutboxMessage.routing_key.in_(keys), ~done.exists())).all()
                for row in rows:
                    row.published_at = None
                replayed += len(rows)
            uow.commit()
        if replayed:
            log.info("outbox: %d unconsumed events queued again after restart", replayed)
        return replayed

    def prune(self) -> int:
        cutoff = self.services.clock.now() - RETENTION
        with self.services.uow() as uow:
            result = uow.session.execute(delete(OutboxMessage).where(OutboxMessage.published_at < cutoff))
            uow.commit()
            return int(getattr(result, "rowcount", 0) or 0)

    def run(self, stop: threading.Event) -> None:
        signal = self.services.outbox_signal
        failures = 0
        while not stop.is_set():
            try:
                published = self.publish_batch()
                failures = 0
                if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
                    self._last_prune = time.monotonic()
                    pruned = self.prune()
                    if pruned:
                        log.info("outbox: pruned %d published rows older than %s", pruned, RETENTION)
            except Exception as exc:  # noqa: BLE001 - a broker or database blip: back off, retry
                failures += 1
                log.warning("relay: publish failed (%s); retrying", type(exc).__name__)
                if isinstance(self.publisher, KombuPublisher):
                    self.publisher.reset()
                    self._declared_partner_queues.clear()
                stop.wait(min(0.5 * 2 ** min(failures, 5), 10))
                continue
            if published < self.batch_size:
                signal.wait(self.poll_interval)
                signal.clear()
