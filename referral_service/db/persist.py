"""New rows without the ORM's flush, for the hot paths (intake, routing, the outbox, the audit log).

The ORM's flush works out, for every object of the session, what changed and in what order the rows
must go in: a few hundred microseconds of CPU per object, which intake paid for each of its five new
rows. A new row needs none of that. `insert_now` INSERTs a new mapped object with the statement
SQLAlchemy compiles once per table, then keeps the object in the session as if it had just been
loaded (persistent, in the identity map, no pending change), so the rest of the unit of work uses it
as before: a later change to it is an UPDATE at the next flush, and `session.get` finds it.

Rows nothing in the transaction needs as objects (outbox events, deadlines, routing decisions, blind
indexes, audit entries) wait instead (`insert_at_commit`) and go in with one `executemany` per table
when the transaction commits, inside it, so they exist exactly when the change does: a router's batch
of twenty referrals writes its outbox rows with one statement, not twenty. A statement of the same
transaction that reads such a table (through the session) writes the waiting rows first, so the
transaction still reads its own writes; a rollback or close drops them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, insert, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.util import find_tables

#: `session.info` key of the rows waiting for the commit: table -> rows, tables in the order first added
#: (a table's rows may refer to an earlier table's, never the reverse).
_PENDING = "referral_service.pending_rows"


def insert_now(session: Session, obj: Any) -> None:
    """INSERT the new object `obj` now, in the session's transaction, and attach it to the session.

    Columns left unset take their Python-side default (the same `default=` the flush would apply),
    also on the object, so nothing on it is left to load. Only for new objects of tables without
    server-generated values that the caller reads back (an autoincrement key is not set on `obj`)."""
    mapper = inspect(obj).mapper
    values: dict[str, Any] = {}
    for attr in mapper.column_attrs:
        column = attr.columns[0]
        if attr.key in obj.__dict__:
            values[column.key] = obj.__dict__[attr.key]
            continue
        default = column.default
        if default is None:
            if column.server_default is None and column is not mapper.local_table.autoincrement_column:
                values[column.key] = None
                setattr(obj, attr.key, None)
            continue
        value = default.arg(None) if default.is_callable else default.arg
        values[column.key] = value
        setattr(obj, attr.key, value)
    session.connection().execute(insert(mapper.local_table), values)
    # As if just loaded: no history, so the flush leaves it alone unless something changes it later.
    make_transient_to_detached(obj)
    session.add(obj)


def insert_at_commit(session: Session, table: Any, row: dict[str, Any]) -> None:
    """Have `row` INSERTed into `table` (a Table or a mapped class) with the transaction's other waiting
    rows of that table, at its commit (or before a statement of it reads the table). Every row of a
    table must name the same columns (one `executemany`)."""
    table = table if isinstance(table, Table) else table.__table__
    pending: dict[Table, list[dict[str, Any]]] = session.info.setdefault(_PENDING, {})
    pending.setdefault(table, []).append(row)


def pending_rows(session: Session, table: Any) -> int:
    """How many rows of `table` the session's transaction still has to write."""
    table = table if isinstance(table, Table) else table.__table__
    return len(session.info.get(_PENDING, {}).get(table, ()))


def write_pending(session: Session) -> None:
    """INSERT every waiting row now: one `executemany` per table, tables and rows in the order added."""
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    connection = session.connection()
    for table, rows in pending.items():
        connection.execute(insert(table), rows[0] if len(rows) == 1 else rows)


@event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    write_pending(session)


@event.listens_for(Session, "do_orm_execute")
def _write_before_reading(state: ORMExecuteState) -> None:
    # Read-your-writes: a statement that reads (or changes) a table with waiting rows sees them, as if
    # each had been inserted at once (an auditor's query lists its own read first).
    pending = state.session.info.get(_PENDING)
    statement = state.statement
    if pending and isinstance(statement, ClauseElement):
        read = find_tables(statement, include_crud=True, include_joins=True, include_selects=True)
        if any(table in read for table in pending):
            write_pending(state.session)


@event.listens_for(Session, "after_transaction_end")
def _forget_on_end(session: Session, transaction: SessionTransaction) -> None:
    # Rolled back or closed without a commit: the rows go with the change.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
