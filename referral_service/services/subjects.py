"""Data-subject operations: crypto-shredding, and purging the old row versions it leaves behind."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from referral_service.db.models import Referral, Subject
from referral_service.domain import events
from referral_service.domain.errors import Conflict, NotFound

if TYPE_CHECKING:
    from referral_service.services.ports import Services

log = logging.getLogger(__name__)

# Rewritten in full (new data file, indexes rebuilt): a plain VACUUM only marks a deleted or updated
# row's space free, and its bytes (the wrapped data key; the blind-index hashes) stay in the file
# until new rows happen to overwrite them. Both tables are small (a few rows per subject).
REWRITTEN_TABLES = ("subject_keys", "blind_indexes")
# Its old row versions hold only ciphertexts under the destroyed key: freeing the space is enough.
VACUUMED_TABLES = ("subjects",)
# VACUUM FULL takes an exclusive lock; never queue behind a long transaction holding everything up.
LOCK_TIMEOUT = "10s"
# VACUUM keeps every row version that a transaction still running may see, and PostgreSQL counts a
# transaction of any database on the server, not only this one's: the purge first waits this long (seconds)
# for the transactions that were open when the erasure committed.
PURGE_WAIT_SECONDS = 30.0
#: Other transactions still open that began before `:since` (their snapshots may see the erased key).
_OLDER_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND xact_start < :since "
    "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"
)


def erase_subject(services: Services, subject_id: str) -> list[str]:
    """Erase, then purge old copies of the key from the database files. Returns warnings for the
    operator (an empty list when the bytes are gone from the database's own files)."""
    with services.uow() as uow:
        subject = uow.session.get(Subject, subject_id)
        if subject is None:
            raise NotFound("no such subject")
        if subject.erased_at is not None:
            raise Conflict("the subject was already erased")
        services.vault.erase(uow.session, subject, services.clock.now())
        first = uow.session.scalars(select(Referral.id).where(Referral.subject_id == subject_id).limit(1)).first()
        uow.emit(events.SubjectErased(referral_id=first, subject_id=subject_id))
        services.access.record(actor=None, action="subject.erase", referral_id=first, subject_id=subject_id)
        uow.commit()
    return purge_old_versions(services.engine)


def purge_old_versions(
    engine: Engine,
    rewrite: tuple[str, ...] = REWRITTEN_TABLES,
    vacuum: tuple[str, ...] = VACUUMED_TABLES,
    *,
    wait: float | None = None,
) -> list[str]:
    """Make committed deletes and overwrites physical: after an erasure, the old wrapped key must not
    be recoverable from the database's files (it stays in backups; see the README). On PostgreSQL the
    `rewrite` tables get VACUUM FULL and the `vacuum` ones a plain VACUUM; SQLite needs no list."""
    if engine.dialect.name == "sqlite":
        return _truncate_sqlite_wal(engine)
    if engine.dialect.name == "postgresql":
        return _vacuum_postgres(engine, rewrite, vacuum, PURGE_WAIT_SECONDS if wait is None else wait)
    return []


def _truncate_sqlite_wal(engine: Engine) -> list[str]:
    # secure_delete (set on every connection) zeroed the old cells in the new page images; the
    # checkpoint copies those over the database file and TRUNCATE empties the WAL, which still held
    # the earlier page images with the key. On the raw connection: no transaction may be open.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        busy, _frames, _done = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        cursor.close()
    finally:
        raw.close()
    if busy:
        log.warning("erasure: the SQLite WAL could not be checkpointed (the database was busy)")
        return [
            "another process kept the database busy, so the write-ahead log (-wal file) may still hold "
            "the old key; it is emptied at the next 'referral-service init' or erasure"
        ]
    return []


def _vacuum_postgres(engine: Engine, rewrite: tuple[str, ...], vacuum: tuple[str, ...], wait: float) -> list[str]:
    warnings: list[str] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        since = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        deadline = time.monotonic() + wait
        while (
            older := conn.execute(_OLDER_TRANSACTIONS, {"since": since}).scalar_one()
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        if older:
            log.warning("purge: %d transaction(s) open since before it began; old row versions may stay", older)
            warnings.append(
                f"{older} transaction(s) open since before the purge began were still running after {wait:g} s, so "
                f"VACUUM may have kept the old row versions they can see; when they have ended, run as the "
                f"owner: VACUUM FULL {', '.join(rewrite)}"
            )
        not_owned = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(:names) AND c.relkind = 'r' "
                    "AND c.relnamespace = to_regnamespace(current_schema())::oid "
                    "AND NOT pg_has_role(current_user, c.relowner, 'USAGE')"
                ),
                {"names": [*rewrite, *vacuum]},
            )
            .scalars()
            .all()
        )
        if not_owned:
            # VACUUM would only warn and skip them, so say so here.
            return [
                f"the database user does not own {', '.join(sorted(not_owned))}, so old row versions were "
                f"not purged; as the owner run: VACUUM FULL {', '.join(rewrite)}"
                + (f"; VACUUM {', '.join(vacuum)}" if vacuum else "")
            ]
        conn.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        for table, full in [*((t, True) for t in rewrite), *((t, False) for t in vacuum)]:
            statement = f"VACUUM {'FULL ' if full else ''}{table}"
            try:
                conn.exec_driver_sql(statement)
            except DBAPIError as exc:  # the erasure is committed: say what is left to do
                log.warning("erasure: %s failed (%s)", statement, type(exc).__name__)
                warnings.append(
                    f"{statement} did not run ({type(exc).__name__}: another transaction held the "
                    f"table for over {LOCK_TIMEOUT}?); the old row versions stay in the data files "
                    f"until it does: run it when the service is quiet"
                )
    return warnings
