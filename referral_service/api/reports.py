"""Reports: the SLA (supervisors) and aggregate statistics with small cells suppressed (analysts, supervisors)."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import request

from referral_service.api import bp, current_actor, requires, services
from referral_service.api.openapi import operation, query
from referral_service.domain.access import Action
from referral_service.domain.errors import ValidationFailed
from referral_service.domain.statistics import DIMENSIONS
from referral_service.services import reports
from schemas import SlaReportSchema, StatisticsSchema

_RANGE = (
    query("from", {"type": "string", "format": "date"}, "first day (YYYY-MM-DD); default: to less the default span"),
    query("to", {"type": "string", "format": "date"}, "last day, inclusive (YYYY-MM-DD); default: today"),
)


def query_date(name: str) -> date | None:
    raw = request.args.get(name)
    # Left out means the default; sent empty (`?to=`, an unfilled template) is not a date, and a report over
    # a range the client did not mean must not come back as if it had asked for it.
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a date", {name: ["a date as YYYY-MM-DD"]}) from None


@bp.get("/reports/sla")
@operation(
    "How well promises were kept, per partner and risk level, for offers made in the period (supervisors)",
    response=SlaReportSchema,
    parameters=_RANGE,
    errors={403: "the SLA report is for supervisors"},
)
@requires(Action.REPORT_SLA)
def sla() -> Any:
    actor = current_actor()
    return reports.sla_report(services(), actor, query_date("from"), query_date("to"))


@bp.get("/reports/statistics")
@operation(
    "Referral counts by up to two dimensions, small cells suppressed (analysts, supervisors)",
    response=StatisticsSchema,
    parameters=(
        query(
            "by",
            {"type": "string", "default": "risk_level"},
            f"one or two of {', '.join(DIMENSIONS)}, separated by a comma",
        ),
        *_RANGE,
    ),
    errors={403: "the statistics are for analysts and supervisors"},
)
@requires(Action.REPORT_STATISTICS)
def statistics() -> Any:
    actor = current_actor()
    by = reports.parse_dimensions(request.args.get("by"))
    return reports.statistics_report(services(), actor, by, query_date("from"), query_date("to"))
