"""Damaged records: where they are reported when a read meets one.

A damaged record is a stored data key or sealed field that does not open under a keyring that
passed its start-up check (a flipped bit on disk, a botched restore, a hand edit). It fails alone:
the read shows a "damaged" marker, and the report here gives operators one log line (ids, table,
column and a fixed reason; never content) and a count per table for `/metrics`
(`damaged_records_total`). `referral-service records check` lists every damaged record.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("referral_service.damage")


@dataclass(frozen=True)
class Damage:
    table: str
    column: str
    row_id: str
    subject_id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "table": self.table,
            "row_id": self.row_id,
            "column": self.column,
            "subject_id": self.subject_id,
            "error": self.reason,
        }


class DamageReporter(Protocol):
    def report(self, damage: Damage) -> None: ...

    def counts(self) -> dict[str, int]:
        """Damaged records met so far in this process, per table (what `/metrics` exposes)."""
        ...


class DamageLog:
    """The default reporter: a warning line and a per-table tally, safe across request threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def report(self, damage: Damage) -> None:
        log.warning(
            "damaged record: table=%s column=%s row=%s subject=%s reason=%s",
            damage.table,
            damage.column,
            damage.row_id,
            damage.subject_id,
            damage.reason,
        )
        with self._lock:
            self._counts[damage.table] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
