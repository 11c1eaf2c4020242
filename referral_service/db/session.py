"""Engine and unit of work."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from referral_service.db.models import OutboxMessage, utcnow
from referral_service.db.persist import insert_at_commit
from referral_service.domain.events import PARTNER_SYSTEM_EVENTS, Event
from referral_service.files import restrict_sqlite_files
from referral_service.messaging.names import EVENTS_EXCHANGE, OUTBOX_CHANNEL, PARTNERS_EXCHANGE, partner_routing_key

#: Execution option for a connection that only reads (on SQLite: a deferred transaction).
READ_ONLY = "referral_read_only"


@contextmanager
def read_only_session(engine: Engine) -> Iterator[Session]:
    """A session for one long read: its own connection and transaction, rolled back at the end; on
    SQLite a deferred transaction (a WAL snapshot) instead of the writers' IMMEDIATE one; on PostgreSQL
    REPEATABLE READ, one snapshot for every statement (READ COMMITTED takes a new one per statement, so
    `audit verify` counted entries and then leaves that the integrator had added meanwhile). Reading
    only, such a transaction never fails to serialize."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as connection:
        session = Session(bind=connection)
        try:
            yield session
        finally:
            session.close()


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
            # A long read (a full audit verify) asks for a deferred transaction: a snapshot that holds
            # no write lock, so intake carries on meanwhile.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


log = logging.getLogger(__name__)

_TRANSACTION_INFO = "referral_service.transaction_info"


def transaction_info(session: Session) -> dict[str, Any]:
    """Like `session.info`, but emptied when the transaction ends (commit or rollback): for what is
    only true while it lasts, such as the rows it has locked."""
    info: dict[str, Any] = session.info.setdefault(_TRANSACTION_INFO, {})
    return info


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_transaction_info(session: Session) -> None:
    session.info.pop(_TRANSACTION_INFO, None)


_CURRENT: ContextVar[UnitOfWork | None] = ContextVar("referral_service.unit_of_work", default=None)


def current_unit_of_work() -> UnitOfWork | None:
    """The innermost unit of work open in this thread (or task), for records that must join its
    transaction (the audit log) without every call passing it down."""
    return _CURRENT.get()


class UncommittedRecord(RuntimeError):
    """A unit of work ended without an error and without committing, but holds a record that must not be
    lost (an audit entry of a read): the read happened, so its record must be committed with it."""


class UnitOfWork:
    """One transaction. Rolls back unless `commit()` was called; events go to the outbox in it.

    Two kinds of record ride along (the audit log's): `must_commit()` marks the transaction as holding a
    record of something already done (a read of personal data), so leaving without committing is a bug
    and raises `UncommittedRecord`; `keep_on_rollback(write)` is for records of refusals, which must
    outlive the rollback that the refusal itself causes: `write` runs again in a fresh transaction.
    `on_failure(hook)` is for records of what the error itself means (an allowed action that met a
    conflict): `hook(error)` runs once the unit of work is closed, outside it, when it ends by an error.
    """

    session: Session

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        on_commit: Any = None,
    ) -> None:
        self._factory = session_factory
        self._on_commit = on_commit
        self._emitted = False
        self._keep: list[Callable[[Session], None]] = []
        self._on_failure: list[Callable[[BaseException], None]] = []
        self._must_commit = False
        self._token: Token[UnitOfWork | None] | None = None

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        self._emitted = False
        self._keep, self._on_failure, self._must_commit = [], [], False
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        forgotten = exc_type is None and self._must_commit
        hooks, self._on_failure = self._on_failure, []
        try:
            self.rollback()
        finally:
            self.session.close()
            if self._token is not None:
                _CURRENT.reset(self._token)
                self._token = None
        if exc is not None:
            for hook in hooks:
                try:
                    hook(exc)
                except Exception:
                    # The error that ended the unit of work is what the caller must see, not this one.
                    log.exception("a failure hook of a unit of work failed")
        if forgotten:
            raise UncommittedRecord("a unit of work that recorded a read ended without committing it")

    def must_commit(self) -> None:
        self._must_commit = True

    def keep_on_rollback(self, write: Callable[[Session], None]) -> None:
        self._keep.append(write)

    def on_failure(self, hook: Callable[[BaseException], None]) -> None:
        self._on_failure.append(hook)

    def emit(
        self, event: Event, *, exchange: str = EVENTS_EXCHANGE, routing_key: str | None = None, notify: bool = False
    ) -> None:
        """Record `event` in the outbox, in this transaction: published only if it commits. `notify`
        marks it for the notify worker too (webhook and e-mail to the partner)."""
        # Written at commit with the transaction's other events, one statement (db.persist), not an object
        # for the flush: every change emits, and a router's batch emits for each of its referrals.
        insert_at_commit(
            self.session,
            OutboxMessage,
            {
                "event_id": event.event_id,
                "type": event.routing_key,
                "aggregate_id": event.referral_id,
                "exchange": exchange,
                "routing_key": routing_key or event.routing_key,
                "body": event.to_message(),
                "notify_pending": notify,
                "created_at": utcnow(),
                "published_at": None,
            },
        )
        if not self._emitted and self.session.get_bind().dialect.name == "postgresql":
            # Delivered at commit only (NOTIFY is transactional): wakes relays in other processes
            # at once instead of at their next poll.
            # On the connection, not the session: no autoflush of the half-built change here.
            self.session.connection().execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        self._emitted = True

    def deliver_to_partner(self, event: Event, partner_id: str) -> None:
        """Also put `event` on the partner's own queue (direct exchange, key = partner id). The same row
        is what the notify worker reads for the partner's own systems (webhook, e-mail): one row, one
        commit, nothing more in this transaction."""
        self.emit(
            event,
            exchange=PARTNERS_EXCHANGE,
            routing_key=partner_routing_key(partner_id),
            notify=event.routing_key in PARTNER_SYSTEM_EVENTS,
        )

    def commit(self) -> None:
        self.session.commit()
        if self._emitted and self._on_commit is not None:
            self._on_commit()
        self._emitted = False
        self._keep.clear()
        self._on_failure.clear()
        self._must_commit = False

    def rollback(self) -> None:
        self.session.rollback()
        self._emitted = False  # the outbox rows went with the transaction
        self._must_commit = False
        keep, self._keep = self._keep, []
        if keep:
            try:
                for write in keep:
                    write(self.session)
                self.session.commit()
            except SQLAlchemyError:
                # The database itself failed (the likely reason for the rollback): nothing more can be
                # written now. Never mask the original error with this one.
                log.exception("could not keep %d record(s) past a rollback", len(keep))
                self.session.rollback()
