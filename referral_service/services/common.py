"""Small helpers shared by the service modules: cursors, locking, counters."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from referral_service.db.models import Counter
from referral_service.domain.errors import ValidationFailed

S = TypeVar("S", bound=Select[Any])
T = TypeVar("T")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


def encode_cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), row_id]).encode()).decode()


# Longer than any cursor encode_cursor writes (a timestamp and an id of at most 64 characters).
MAX_CURSOR_CHARS = 256
MAX_CURSOR_ID_CHARS = 100


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (timestamp, id) that `encode_cursor` wrote; anything else a client made up is a 422.

    A cursor is client input: it must be exactly a two-item list of strings, a timezone-aware time
    that exists in UTC, and a short id; a naive or out-of-range time would otherwise fail only when
    bound into the query, and deep nesting in the JSON parser (RecursionError).
    """
    invalid = ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]})
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not (isinstance(data, list) and len(data) == 2 and all(isinstance(v, str) for v in data)):
            raise invalid
        at_text, row_id = data
        at = datetime.fromisoformat(at_text)
        if at.utcoffset() is None or len(row_id) > MAX_CURSOR_ID_CHARS:
            raise invalid
        return at.astimezone(UTC), row_id
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError):
        raise invalid from None


def clamp_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("invalid limit", {"limit": [f"must be between 1 and {MAX_LIMIT}"]})
    return limit


def for_update(session: Session, query: S) -> S:
    """Row lock on PostgreSQL; SQLite already serialises writers (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update()
    return query


@functools.cache
def _counter_upsert(dialect: str) -> Any:
    """The counter's upsert, built once per dialect (intake takes a number each time)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Counter).values(name=bindparam("name"), value=1)
    stmt = stmt.on_conflict_do_update(index_elements=[Counter.name], set_={"value": Counter.value + 1})
    return stmt.returning(Counter.value)


def next_counter(session: Session, name: str) -> int:
    """Atomically increment and return a named counter (upsert, safe under concurrency)."""
    # On the connection: the counter needs none of the session's pending rows, so no flush happens here
    # (they go in the caller's next flush, with the rest).
    statement = _counter_upsert(session.get_bind().dialect.name)
    return int(session.connection().execute(statement, {"name": name}).scalar_one())


def must(value: T | None, what: str = "row") -> T:
    """A row the schema guarantees exists (a foreign key); its absence is a bug, not a client error."""
    if value is None:
        raise LookupError(f"missing {what}")
    return value
