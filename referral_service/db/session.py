"""Engine and unit of work."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from referral_service.db.models import OutboxMessage
from referral_service.domain.events import Event
from referral_service.files import restrict_sqlite_files
from referral_service.messaging.names import EVENTS_EXCHANGE, OUTBOX_CHANNEL, PARTNERS_EXCHANGE, partner_routing_key


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        database = engine.url.database

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when a transaction starts, so we can make
            # every one IMMEDIATE: writers queue on the lock instead of failing mid-transaction.
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # the embedded profile must survive a kill -9
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # Erased rows and keys are overwritten with zeros, not just unlinked from the b-tree.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()
            restrict_sqlite_files(database)  # the WAL and -shm exist from here on

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


class UnitOfWork:
    """One transaction. Rolls back unless `commit()` was called; events go to the outbox in it."""

    session: Session

    def __init__(self, session_factory: sessionmaker[Session], on_commit: Any = None) -> None:
        self._factory = session_factory
        self._on_commit = on_commit
        self._emitted = False

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        self._emitted = False
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.rollback()
        self.session.close()

    def emit(self, event: Event, *, exchange: str = EVENTS_EXCHANGE, routing_key: str | None = None) -> None:
        """Record `event` in the outbox, in this transaction: published only if it commits."""
        self.session.add(
            OutboxMessage(
                event_id=event.event_id,
                type=event.routing_key,
                aggregate_id=event.referral_id,
                exchange=exchange,
                routing_key=routing_key or event.routing_key,
                body=event.to_message(),
            )
        )
        if not self._emitted and self.session.get_bind().dialect.name == "postgresql":
            # Delivered at commit only (NOTIFY is transactional): wakes relays in other processes
            # at once instead of at their next poll.
            # On the connection, not the session: no autoflush of the half-built change here.
            self.session.connection().execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        self._emitted = True

    def deliver_to_partner(self, event: Event, partner_id: str) -> None:
        """Also put `event` on the partner's own queue (direct exchange, key = partner id)."""
        self.emit(event, exchange=PARTNERS_EXCHANGE, routing_key=partner_routing_key(partner_id))

    def commit(self) -> None:
        self.session.commit()
        if self._emitted and self._on_commit is not None:
            self._on_commit()
        self._emitted = False

    def rollback(self) -> None:
        self.session.rollback()
        self._emitted = False  # the outbox rows went with the transaction
