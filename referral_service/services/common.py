"""Small helpers shared by the service modules: cursors, locking, counters."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select
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


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(row_id)
    except (binascii.Error, ValueError, TypeError):
        raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]}) from None


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


def next_counter(session: Session, name: str) -> int:
    """Atomically increment and return a named counter (upsert, safe under concurrency)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Counter).values(name=name, value=1)
    stmt = stmt.on_conflict_do_update(index_elements=[Counter.name], set_={"value": Counter.value + 1})
    return int(session.execute(stmt.returning(Counter.value)).scalar_one())


def must(value: T | None, what: str = "row") -> T:
    """A row the schema guarantees exists (a foreign key); its absence is a bug, not a client error."""
    if value is None:
        raise LookupError(f"missing {what}")
    return value
