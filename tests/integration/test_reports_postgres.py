"""The SLA report's quantiles on PostgreSQL (percentile_cont) agree with those on SQLite (ranked rows); the
statistics, grouped in the database, count as on SQLite."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text, update

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, Referral
from referral_service.domain.model import Actor, Role
from referral_service.services.reports import sla_report, statistics_report
from tests.integration.harness import World

pytestmark = pytest.mark.integration


def test_the_sla_report_on_postgresql_gives_the_same_medians_and_90th_percentiles(
    pg_savepoint_services: Services,
) -> None:
    world = World(pg_savepoint_services)
    partner_id = world.add_partner()
    referral_id = world.submit(world.caseworker(), risk_level="high")
    offered = datetime.now(UTC) - timedelta(hours=12)
    # Accepted after 1, 2 and 3 hours; first follow-up 4 and 3 hours after acceptance (the third: none).
    rows = [(1, 4), (2, 3), (3, None)]
    with pg_savepoint_services.uow() as uow:
        for hours, contact in rows:
            responded = offered + timedelta(hours=hours)
            uow.session.add(
                Assignment(
                    referral_id=referral_id,
                    partner_id=partner_id,
                    service="medical",
                    status="closed",
                    reasons=[],
                    offered_at=offered,
                    responded_at=responded,
                    risk_level="high",
                    first_followup_at=responded + timedelta(hours=contact) if contact else None,
                )
            )
        uow.session.add(
            Assignment(
                referral_id=referral_id,
                partner_id=partner_id,
                service="medical",
                status="declined",
                decline_reason="no_capacity",
                reasons=[],
                offered_at=offered,
                responded_at=offered,
                risk_level="high",
            )
        )
        uow.commit()
    report = sla_report(pg_savepoint_services, Actor("sup", Role.SUPERVISOR), None, None)
    [row] = [r for r in report["rows"] if r["partner_id"] == partner_id]
    assert (row["offered"], row["accepted"], row["declined"]) == (4, 3, 1)
    assert row["declines_by_reason"] == {"no_capacity": 1}
    assert (row["median_hours_to_accept"], row["p90_hours_to_accept"]) == (2.0, 2.8)
    assert (row["median_hours_to_first_contact"], row["p90_hours_to_first_contact"]) == (3.5, 3.9)


def test_statistics_on_postgresql_count_each_referral_once_per_need_in_its_utc_month(
    pg_savepoint_services: Services,
) -> None:
    """The counts are grouped in the database (by the needs list as text, by month with to_char): the
    same answer as counting row by row."""
    world = World(pg_savepoint_services)
    caseworker = world.caseworker()
    both = [world.submit(caseworker, needs=["medical", "psychosocial"]) for _ in range(5)]
    medical = [world.submit(caseworker, needs=["medical"]) for _ in range(6)]
    # Years back, so nothing else in the shared database falls in the period; the first five at the end of
    # January in UTC (already February east of Greenwich), the other six in mid-February.
    with pg_savepoint_services.uow() as uow:
        uow.session.execute(
            update(Referral).where(Referral.id.in_(both)).values(created_at=datetime(2001, 1, 31, 23, 30, tzinfo=UTC))
        )
        uow.session.execute(
            update(Referral).where(Referral.id.in_(medical)).values(created_at=datetime(2001, 2, 15, tzinfo=UTC))
        )
        # A server set to Pakistan's time must still count the month in UTC (undone with the test's rollback).
        uow.session.execute(text("SET TIME ZONE 'Asia/Karachi'"))
        uow.commit()
    supervisor = Actor("sup", Role.SUPERVISOR)
    start, end = date(2001, 1, 1), date(2001, 3, 31)
    by_need = statistics_report(pg_savepoint_services, supervisor, ("need",), start, end)
    assert by_need["total"] == 11
    assert {c["need"]: c["count"] for c in by_need["cells"]} == {"medical": 11, "psychosocial": 5}
    by_month = statistics_report(pg_savepoint_services, supervisor, ("month",), start, end)
    assert {c["month"]: c["count"] for c in by_month["cells"]} == {"2001-01": 5, "2001-02": 6}
