"""Planner statistics for SQLite (the embedded profile).

PostgreSQL's autovacuum keeps its planner statistics current. SQLite has none until `ANALYZE` runs, and
without them it leaves the reports' covering indexes (migration 0011) unused: on 100,000 referrals the
SLA report's counts took 248 ms without statistics and 84 ms with them, the statistics by district 436
and 183 ms (BENCHMARKS.md, "Web pages"). Statistics taken while the database was small mislead as badly
as none, so the embedded scheduler refreshes them whenever the number of referrals has doubled since the
last time (a growing database: a handful of refreshes in all) and at least every few hours.
`analysis_limit` samples a bounded number of rows per index, so each refresh takes milliseconds whatever
the database's size, as SQLite's documentation advises for periodic runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from referral_service.db.models import Referral

#: Rows sampled per index (SQLite's advice for periodic runs: a few hundred to a thousand).
ANALYSIS_LIMIT = 1000
#: At least this often, if anything changed at all.
REFRESH_EVERY_SECONDS = 6 * 3600.0
#: How often the scheduler looks at the size (one count of an index).
CHECK_EVERY_SECONDS = 60.0
_COUNT = select(func.count()).select_from(Referral)


def refresh_planner_statistics(engine: Engine) -> bool:
    """Refresh SQLite's planner statistics now (`ANALYZE`, sampled); whether anything was done (nothing
    on PostgreSQL, whose autovacuum does it)."""
    if engine.dialect.name != "sqlite":
        return False
    with engine.begin() as connection:  # a write transaction: ANALYZE writes sqlite_stat1
        connection.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        connection.exec_driver_sql("ANALYZE")
    return True


@dataclass
class PlannerStatistics:
    """When to refresh: at the first look, when the referrals have doubled since, or every few hours."""

    engine: Engine
    clock: Callable[[], float] = time.monotonic
    _checked_at: float | None = None
    _refreshed_at: float = 0.0
    _referrals: int | None = None  # at the last refresh; None: never refreshed

    def tick(self) -> bool:
        """Look (at most every `CHECK_EVERY_SECONDS`) and refresh if due; whether it refreshed."""
        if self.engine.dialect.name != "sqlite":
            return False
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < CHECK_EVERY_SECONDS:
            return False
        self._checked_at = now
        with self.engine.connect() as connection:
            referrals = int(connection.execute(_COUNT).scalar_one())
        last = self._referrals
        doubled = last is None or referrals >= 2 * max(last, 1)
        # Otherwise only once the interval has passed, and only if anything changed.
        if not doubled and (now - self._refreshed_at < REFRESH_EVERY_SECONDS or referrals == last):
            return False
        refresh_planner_statistics(self.engine)
        self._refreshed_at, self._referrals = now, referrals
        return True
