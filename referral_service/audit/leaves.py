"""Recomputing the leaves of a range of the audit log straight from the database, in a process of its own.

A full verify recomputes a leaf for every entry of the log; for a large log that is the bulk of its
time, so `AuditLog.verify` splits the index range over a few processes (`range_tree_at`, run by
`concurrent.futures` with the "spawn" start method: safe in a threaded server). This module is kept
light (standard library, SQLAlchemy for the URL and the driver) so a new process starts quickly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from referral_service.audit.verifier import ENTRY_FORMAT


def _len(n: int) -> bytes:
    return b"%08d" % n


#: What every leaf hash starts with: RFC 9162's leaf prefix and the entry format's own part.
LEAF_HEAD = b"\x00" + _len(len(ENTRY_FORMAT)) + ENTRY_FORMAT


def _sqlite_part(column: str) -> str:
    blob = f"CAST(coalesce({column}, x'') AS BLOB)"
    return f"printf('%08d', length({blob})) || {blob}"


def _pg_part(column: str, text: bool = False) -> str:
    value = f"convert_to({column}, 'UTF8')" if text else f"coalesce({column}, ''::bytea)"
    return f"convert_to(lpad(octet_length({value})::text, 8, '0'), 'UTF8') || {value}"


# The canonical bytes after the format part (`verifier.entry_bytes`), built by the database itself: one
# value per entry to fetch instead of eleven, which is most of what a full verify costs. A timestamp is
# written as `format_at` writes it; a row whose stored text is in another form gives other bytes, and so
# fails verification, as any other change to it does.
_SQLITE_BYTES = (
    "CAST("
    + " || ".join(
        [
            _sqlite_part("id"),
            "printf('%08d', 27) || replace(at, ' ', 'T') || 'Z'",
            *(_sqlite_part(c) for c in ("actor_bi", "action_bi", "referral_bi", "subject_bi", "record_ct")),
            _sqlite_part("details_key"),
            *(_sqlite_part(c) for c in ("details_ct", "commitment")),
        ]
    )
    + " AS BLOB)"
)
_PG_BYTES = " || ".join(
    [
        _pg_part("id", text=True),
        "convert_to('00000027' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'UTF8')",
        *(_pg_part(c) for c in ("actor_bi", "action_bi", "referral_bi", "subject_bi", "record_ct")),
        _pg_part("details_key", text=True),
        *(_pg_part(c) for c in ("details_ct", "commitment")),
    ]
)


def entries_query(dialect: str, chunk: int) -> tuple[str, str]:
    """(SQL, parameter mark) selecting (idx, canonical bytes after the format part) of entries in an
    index range, in index order."""
    mark, expression = ("?", _SQLITE_BYTES) if dialect == "sqlite" else ("%s", _PG_BYTES)
    sql = (
        f"SELECT idx, {expression} FROM audit_entries "  # noqa: S608 - constant text and an integer only
        f"WHERE idx >= {mark} AND idx < {mark} ORDER BY idx LIMIT {int(chunk)}"
    )
    return sql, mark


def leaves_from_cursor(
    cursor: Any, dialect: str, start: int, end: int, chunk: int = 50_000
) -> tuple[bytes, int | None]:
    """The leaves of entries start..end-1, concatenated, and the first index in that range that no
    entry holds (None: every index is held once)."""
    query, _mark = entries_query(dialect, chunk)
    out: list[bytes] = []
    append, expected = out.append, start
    sha256, head = hashlib.sha256, LEAF_HEAD
    while expected < end:
        cursor.execute(query, (expected, end))
        rows = cursor.fetchall()
        if not rows:
            return b"".join(out), expected
        for idx, body in rows:
            if idx != expected:
                return b"".join(out), expected
            expected += 1
            append(sha256(head + body).digest())
    return b"".join(out), None


@dataclass
class RangeTree:
    """What one process recomputed for entries start..end-1 (`range_tree`)."""

    start: int
    end: int
    missing: int | None  # the first index in the range no entry holds
    mismatch: int | None  # the first index whose stored leaf is not the recomputed one
    levels: list[bytes]  # levels[k]: the complete level-k nodes of the range, concatenated


def _levels(leaves: bytes, top: int | None) -> list[bytes]:
    sha256 = hashlib.sha256
    out = [leaves]
    nodes = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
    while len(nodes) > 1 and (top is None or len(out) <= top):
        pairs = iter(nodes[: len(nodes) & ~1])
        # RFC 9162 interior node: SHA-256 of 0x01, left, right.
        nodes = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
        out.append(b"".join(nodes))
    return out


def range_tree(cursor: Any, dialect: str, start: int, end: int, top: int | None = None) -> RangeTree:
    """Recompute the leaves of entries start..end-1, compare them with the stored leaves, and build the
    complete nodes above them up to level `top` (all levels when None). `start` must be a multiple of
    2**top, so the range's nodes are nodes of the whole tree."""
    joined, missing = leaves_from_cursor(cursor, dialect, start, end)
    mark = "?" if dialect == "sqlite" else "%s"
    if missing is not None:
        return RangeTree(start, end, missing, None, [])
    cursor.execute(
        f"SELECT hash FROM audit_nodes WHERE level = 0 AND idx >= {mark} AND idx < {mark} ORDER BY idx",  # noqa: S608
        (start, end),
    )
    stored = b"".join([h for (h,) in cursor.fetchall()])
    mismatch = None
    if stored != joined:
        mismatch = next(
            (start + i // 32 for i in range(0, len(joined), 32) if stored[i : i + 32] != joined[i : i + 32]), end
        )
    return RangeTree(start, end, None, mismatch, _levels(joined, top))


def range_tree_at(url: str, start: int, end: int, top: int | None) -> RangeTree:
    """`range_tree` on a connection of this process's own to the database at `url`."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        raw = engine.raw_connection()
        try:
            return range_tree(raw.cursor(), engine.dialect.name, start, end, top)
        finally:
            raw.close()
    finally:
        engine.dispose()
