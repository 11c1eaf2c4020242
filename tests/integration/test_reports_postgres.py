"""The SLA report's quantiles on PostgreSQL (percentile_cont) agree with those on SQLite (ranked rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment
from referral_service.domain.model import Actor, Role
from referral_service.services.reports import sla_report
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
