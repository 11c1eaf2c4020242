"""Recomputing the leaves of a range of the audit log straight from the database, in a process of its own.

A full verify recomputes a leaf for every entry of the log; for a large log that is the bulk of its
time, so `AuditLog.verify` splits the index range over a few processes (`range_tree_at`, run by
`concurrent.futures` with the "spawn" start method: safe in a threaded server). This module is kept
light (standard library, SQLAlchemy for the URL and the driver) so a new process starts quickly.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from referral_service.audit.verifier import ENTRY_FORMAT, entry_bytes, leaf_hash

_LEN = struct.Struct(">I").pack
_FORMAT_PART = _LEN(len(ENTRY_FORMAT)) + ENTRY_FORMAT


def raw_at(value: Any) -> str:
    """`format_at` of a timestamp as the driver returns it: a datetime (psycopg), or SQLite's stored text
    `YYYY-MM-DD HH:MM:SS.ffffff` (UTC, as `UTCDateTime` writes it), rewritten without parsing."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return value[:10] + "T" + value[11:] + "Z"
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_L16, _L32, _L36, _L27, _L0 = _LEN(16), _LEN(32), _LEN(36), _LEN(27), _LEN(0)
_KEY_PARTS = {"audit": _LEN(5) + b"audit", "subject": _LEN(7) + b"subject"}


def raw_leaf(
    entry_id: str,
    at: str,
    actor_bi: bytes,
    action_bi: bytes,
    referral_bi: bytes | None,
    subject_bi: bytes | None,
    record_ct: bytes,
    details_key: str,
    details_ct: bytes,
    commitment: bytes,
) -> bytes:
    """`leaf_hash(entry_bytes(...))` for the verifier's loop over a million rows: the length prefixes
    of the fields every entry writes at one size are constants; any other entry takes the general path."""
    key_part = _KEY_PARTS.get(details_key)
    if (
        len(entry_id) != 36
        or len(at) != 27
        or len(actor_bi) != 16
        or len(action_bi) != 16
        or len(commitment) != 32
        or key_part is None
        or (referral_bi is not None and len(referral_bi) != 16)
        or (subject_bi is not None and len(subject_bi) != 16)
    ):
        return leaf_hash(
            entry_bytes(
                entry_id=entry_id,
                at=at,
                actor_bi=actor_bi,
                action_bi=action_bi,
                referral_bi=referral_bi,
                subject_bi=subject_bi,
                record_ct=record_ct,
                details_key=details_key,
                details_ct=details_ct,
                commitment=commitment,
            )
        )
    return hashlib.sha256(
        b"".join(
            (
                b"\x00",
                _FORMAT_PART,
                _L36,
                entry_id.encode(),
                _L27,
                at.encode(),
                _L16,
                actor_bi,
                _L16,
                action_bi,
                (_L16 + referral_bi) if referral_bi else _L0,
                (_L16 + subject_bi) if subject_bi else _L0,
                _LEN(len(record_ct)),
                record_ct,
                key_part,
                _LEN(len(details_ct)),
                details_ct,
                _L32,
                commitment,
            )
        )
    ).digest()


SELECT_ENTRIES = (
    "SELECT idx, id, at, actor_bi, action_bi, referral_bi, subject_bi, record_ct, details_key, "
    "details_ct, commitment FROM audit_entries WHERE idx >= {mark} AND idx < {mark} ORDER BY idx LIMIT {chunk}"
)


def leaves_from_cursor(cursor: Any, mark: str, start: int, end: int, chunk: int = 50_000) -> tuple[bytes, int | None]:
    """The leaves of entries start..end-1, concatenated, and the first index in that range that no
    entry holds (None: every index is held once)."""
    query = SELECT_ENTRIES.format(mark=mark, chunk=int(chunk))
    out: list[bytes] = []
    append, expected = out.append, start
    sha256, pack, join = hashlib.sha256, _LEN, b"".join
    head, l16, l27, l36, l32, l0, keys = b"\x00" + _FORMAT_PART, _L16, _L27, _L36, _L32, _L0, _KEY_PARTS
    while expected < end:
        cursor.execute(query, (expected, end))
        rows = cursor.fetchall()
        if not rows:
            return join(out), expected
        for idx, eid, at, abi, acbi, rbi, sbi, rct, dkey, dct, com in rows:
            if idx != expected:
                return join(out), expected
            expected += 1
            if type(at) is str and len(at) == 26 and len(eid) == 36:
                ats = at[:10] + "T" + at[11:] + "Z"
                key_part = keys.get(dkey)
                if (
                    key_part is not None
                    and len(abi) == 16
                    and len(acbi) == 16
                    and len(com) == 32
                    and (rbi is None or len(rbi) == 16)
                    and (sbi is None or len(sbi) == 16)
                ):
                    # The common case, written out: constant length prefixes (see `raw_leaf`).
                    append(
                        sha256(
                            join(
                                (
                                    head,
                                    l36,
                                    eid.encode(),
                                    l27,
                                    ats.encode(),
                                    l16,
                                    abi,
                                    l16,
                                    acbi,
                                    (l16 + rbi) if rbi else l0,
                                    (l16 + sbi) if sbi else l0,
                                    pack(len(rct)),
                                    rct,
                                    key_part,
                                    pack(len(dct)),
                                    dct,
                                    l32,
                                    com,
                                )
                            )
                        ).digest()
                    )
                    continue
            append(raw_leaf(eid, raw_at(at), abi, acbi, rbi, sbi, rct, dkey, dct, com))
    return join(out), None


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


def range_tree(cursor: Any, mark: str, start: int, end: int, top: int | None = None) -> RangeTree:
    """Recompute the leaves of entries start..end-1, compare them with the stored leaves, and build the
    complete nodes above them up to level `top` (all levels when None). `start` must be a multiple of
    2**top, so the range's nodes are nodes of the whole tree."""
    joined, missing = leaves_from_cursor(cursor, mark, start, end)
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
            return range_tree(raw.cursor(), "?" if engine.dialect.name == "sqlite" else "%s", start, end, top)
        finally:
            raw.close()
    finally:
        engine.dispose()
