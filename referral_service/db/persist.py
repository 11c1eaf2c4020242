"""New rows written at once with one Core INSERT each, for the hot paths (intake, the outbox).

The ORM's flush works out, for every object of the session, what changed and in what order the rows
must go in: a few hundred microseconds of CPU per object, which intake paid for each of its five new
rows. A new row needs none of that. `insert_now` INSERTs a new mapped object with the statement
SQLAlchemy compiles once per table, then keeps the object in the session as if it had just been
loaded (persistent, in the identity map, no pending change), so the rest of the unit of work uses it
as before: a later change to it is an UPDATE at the next flush, and `session.get` finds it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, inspect
from sqlalchemy.orm import Session, make_transient_to_detached


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


def insert_rows(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT plain rows (no objects kept) in one statement, or one executemany for several."""
    if rows:
        session.connection().execute(insert(model.__table__), rows[0] if len(rows) == 1 else rows)
