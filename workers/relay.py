"""Outbox relay: publishes committed events, in order per referral, with publisher confirms.

At-least-once: a row is marked published in the same transaction that claimed it, after the
broker confirmed it. If the process dies between the confirm and the commit, the row is
published again; consumers are idempotent by event id, so that is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, exists, false, or_, select, update
from sqlalchemy.orm import Session

from referral_service.bootstrap import Services
from referral_service.db.models import OutboxMessage, ProcessedMessage
from referral_service.messaging.broker import KombuPublisher, Publisher
from referral_service.messaging.names import EVENTS_EXCHANGE, OUTBOX_CHANNEL, PARTNERS_EXCHANGE, partner_of_routing_key
from referral_service.messaging.topology import EXCHANGES, partner_queue
from workers.handlers import CONSUMER_GROUPS, routing_keys

log = logging.getLogger(__name__)
RETENTION = timedelta(days=7)
PRUNE_EVERY_SECONDS = 3600.0
OUTBOX = cast(Table, OutboxMessage.__table__)
MARK_PUBLISHED = (
    update(OUTBOX).where(OUTBOX.c.id.in_(bindparam("ids", expanding=True))).values(published_at=bindparam("now"))
)


class OutboxRelay:
    def __init__(
        self, services: Services, publisher: Publisher, *, batch_size: int = 200, poll_interval: float = 0.05
    ) -> None:
        self.services = services
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._declared_partner_queues: set[str] = set()
        self._last_prune = float("-inf")
        self._claim_statements: dict[str, Any] = {}
        # On the in-process broker (embedded profile) no partner system can connect to a partner's
        # queue: a message put there would reach no one and stay in the process's memory for as long
        # as it runs (about 1 KB per offer, without end). Such rows are marked published unsent; the
        # partner hears of them through the inbox, the API, webhooks and e-mail.
        self._partner_queues_reachable = not (
            isinstance(publisher, KombuPublisher) and publisher.connection.transport.driver_type == "memory"
        )

    def _claim(self, session: Session) -> list[Any]:
        dialect = session.get_bind().dialect.name
        if dialect not in self._claim_statements:
            self._claim_statements[dialect] = self._claim_statement(dialect)
        return list(session.execute(self._claim_statements[dialect]))

    def _claim_statement(self, dialect: str) -> Any:
        # Built once: constructing this statement anew each round costs more CPU than running it.
        t = OutboxMessage.__table__.c
        columns = (t.id, t.aggregate_id, t.exchange, t.routing_key, t.body, t.event_id)
        if dialect != "postgresql":
            # SQLite: one writer at a time (BEGIN IMMEDIATE), so a plain scan in id order is safe.
            return select(*columns).where(t.published_at.is_(None)).order_by(t.id).limit(self.batch_size)
        # Several relays: each claims, with SKIP LOCKED, the oldest pending row of referrals nobody
        # else holds. Holding that row means no other relay can take any later row of the same
        # referral (for them it has an earlier pending row), so ours are taken too, in the same
        # statement: a referral's events are never published out of order, and the offer that
        # follows a routing decision leaves with the decision instead of a round later.
        earlier = OutboxMessage.__table__.alias("earlier")
        heads = (
            select(t.id, t.aggregate_id)
            .where(
                t.published_at.is_(None),
                ~exists().where(
                    earlier.c.aggregate_id == t.aggregate_id,
                    earlier.c.published_at.is_(None),
                    earlier.c.id < t.id,
                ),
            )
            .order_by(t.id)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
            .cte("heads")
        )
        # No SKIP LOCKED for the later rows: skipping one would publish its successors before it.
        return (
            select(*columns)
            .where(
                t.published_at.is_(None),
                or_(t.id.in_(select(heads.c.id)), t.aggregate_id.in_(select(heads.c.aggregate_id))),
            )
            .order_by(t.id)
            .limit(self.batch_size * 5)
            .with_for_update(of=OutboxMessage.__table__)
        )

    def publish_batch(self) -> int:
        """Publish the pending rows this relay can claim; returns how many were published."""
        with self.services.uow() as uow:
            session = uow.session
            rows = self._claim(session)
            if not rows:
                return 0
            for row in rows:
                if row.exchange == PARTNERS_EXCHANGE and not self._partner_queues_reachable:
                    continue
                self._ensure_partner_queue(row)
                self.publisher.publish(EXCHANGES[row.exchange], row.routing_key, row.body, message_id=row.event_id)
            session.execute(MARK_PUBLISHED, {"ids": [r.id for r in rows], "now": self.services.clock.now()})
            session.commit()
            return len(rows)

    def _ensure_partner_queue(self, row: Any) -> None:
        # A direct exchange drops a message that no queue is bound for: bind before the first offer.
        partner_id = partner_of_routing_key(row.routing_key) if row.exchange == PARTNERS_EXCHANGE else None
        if partner_id is None or row.routing_key in self._declared_partner_queues:
            return
        if isinstance(self.publisher, KombuPublisher):
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
            for group in CONSUMER_GROUPS:
                keys = routing_keys(group)
                done = select(ProcessedMessage.event_id).where(
                    ProcessedMessage.consumer == group, ProcessedMessage.event_id == OutboxMessage.event_id
                )
                rows = uow.session.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.published_at.is_not(None),
                        OutboxMessage.exchange == EVENTS_EXCHANGE,
                        OutboxMessage.routing_key.in_(keys),
                        ~done.exists(),
                    )
                ).all()
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
            # A notice the notify worker has not taken up yet (it was down for a week) stays: its
            # webhook or e-mail is still owed.
            old = (OutboxMessage.published_at < cutoff) & (OutboxMessage.notify_pending == false())
            gone = delete(OutboxMessage).where(old)
            result = uow.session.execute(gone)
            uow.commit()
            return int(getattr(result, "rowcount", 0) or 0)

    def run(self, stop: threading.Event) -> None:
        wakeup = OutboxWakeup(self.services, self.poll_interval)
        try:
            self._run(stop, wakeup)
        finally:
            wakeup.close()

    def _run(self, stop: threading.Event, wakeup: OutboxWakeup) -> None:
        failures = 0
        while not stop.is_set():
            # Cleared before looking, so a commit that lands while we publish wakes the next wait.
            wakeup.clear()
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
            # A full batch means more is waiting; otherwise sleep until a commit (or the poll) says so.
            if published < self.batch_size:
                wakeup.wait()


class OutboxWakeup:
    """Waits until new outbox rows may be there: a PostgreSQL NOTIFY from any process that
    committed some, this process's own commit signal, or else the poll interval."""

    LISTENING_POLL = 0.2  # only a safety net while notifications arrive
    #: After a notification, how long to let more commits land before claiming: fewer, fuller batches
    #: for a few milliseconds of latency.
    LINGER = 0.005

    def __init__(self, services: Services, poll_interval: float) -> None:
        self.signal = services.outbox_signal
        self.poll_interval = poll_interval
        url = services.engine.url
        self._dsn = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url.get_backend_name() == "postgresql"
            else None
        )
        self._conn: Any = None
        self._retry_at = 0.0
        self.linger = self.LINGER

    def clear(self) -> None:
        self.signal.clear()

    def _listener(self) -> Any:
        if self._dsn is None or self._conn is not None or time.monotonic() < self._retry_at:
            return self._conn
        import psycopg

        try:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            self._conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        except psycopg.Error as exc:
            log.warning("relay: cannot listen for outbox notifications (%s); polling", type(exc).__name__)
            self.close()
            self._retry_at = time.monotonic() + 10
        return self._conn

    def wait(self) -> None:
        conn = self._listener()
        if conn is None:
            self.signal.wait(self.poll_interval)
            return
        try:
            woken = False
            for _ in conn.notifies(timeout=self.LISTENING_POLL, stop_after=1):
                woken = True
            if woken:
                # Every commit sends one: what arrived while the last batch was published (or arrives
                # within the linger) is for rows the next claim takes anyway. One wake-up for all of
                # them, instead of one claim each that mostly finds nothing.
                if self.linger:
                    time.sleep(self.linger)
                for _ in conn.notifies(timeout=0.0):
                    pass
        except Exception as exc:  # noqa: BLE001 - the database went away: poll until it is back
            log.warning("relay: outbox notifications lost (%s); polling", type(exc).__name__)
            self.close()
            self._retry_at = time.monotonic() + 1

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
