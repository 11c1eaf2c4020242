"""SQLite's planner statistics are refreshed as the database grows: at the first look, when the
referrals have doubled since, and not on every tick."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from referral_service.bootstrap import Services
from referral_service.db.planner import CHECK_EVERY_SECONDS, REFRESH_EVERY_SECONDS, PlannerStatistics
from referral_service.services.referrals import submit_referral
from schemas import ReferralInputSchema
from tests.factories import referral_body


def _stat_rows(services: Services, table: str) -> list[str]:
    with services.engine.connect() as connection:
        if not connection.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")).first():
            return []
        return [r[0] for r in connection.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t"), {"t": table})]


def _submit(services: Services, actor: Any, n: int, start: int) -> None:
    for i in range(start, start + n):
        body = referral_body(subject__cnic=f"17301-{i:07d}-1", subject__phone=f"+92300{i:07d}")
        submit_referral(services, ReferralInputSchema().load(body), actor)


def test_statistics_are_taken_at_the_first_look_and_again_only_once_the_referrals_have_doubled(
    services: Services, make_user: Any
) -> None:
    caseworker = make_user("caseworker").actor
    _submit(services, caseworker, 3, 0)
    ticks = [0.0]
    statistics = PlannerStatistics(services.engine, clock=lambda: ticks[0])
    assert statistics.tick() is True
    first = _stat_rows(services, "referrals")
    assert first and all(row.startswith("3") for row in first)  # each index's row count comes first

    ticks[0] += 1
    assert statistics.tick() is False  # looked a second ago
    _submit(services, caseworker, 2, 3)
    ticks[0] += CHECK_EVERY_SECONDS
    assert statistics.tick() is False  # 5 referrals: not yet twice the 3 it was taken at
    assert _stat_rows(services, "referrals") == first
    _submit(services, caseworker, 1, 5)
    ticks[0] += CHECK_EVERY_SECONDS
    assert statistics.tick() is True  # 6: doubled
    assert all(row.startswith("6") for row in _stat_rows(services, "referrals"))

    ticks[0] += REFRESH_EVERY_SECONDS
    assert statistics.tick() is False  # hours later, but nothing changed
    _submit(services, caseworker, 1, 6)
    ticks[0] += CHECK_EVERY_SECONDS
    assert statistics.tick() is True  # hours since, and it changed: taken again
    assert all(row.startswith("7") for row in _stat_rows(services, "referrals"))
