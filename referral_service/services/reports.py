"""Reports: how well promises were kept (SLA, supervisors) and aggregate statistics (analysts too).

Neither opens a sealed field or names a person: the SLA counts assignments and deadlines per partner
and risk level; the statistics count referrals by coarse categories kept in the clear for that
purpose (`Subject.stat_sex`, `Subject.stat_age_band`, written at intake, cleared on erasure), with
small cells suppressed by `domain/statistics.py` before anything leaves this module.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from referral_service.db.models import Assignment, Deadline, FollowUp, Referral, Subject
from referral_service.domain import statistics
from referral_service.domain.access import Action
from referral_service.domain.errors import ValidationFailed
from referral_service.domain.model import (
    AGE_BANDS,
    OPEN_ASSIGNMENT_STATUSES,
    RISK_LEVELS,
    SERVICES,
    SEXES,
    UNKNOWN,
    Actor,
    AssignmentStatus,
    DeadlineStatus,
    ReferralStatus,
)
from referral_service.services.authorization import authorize

if TYPE_CHECKING:
    from referral_service.services.ports import Services

MAX_RANGE_DAYS = 3 * 366
SLA_DEFAULT_DAYS = 30
STATISTICS_DEFAULT_DAYS = 365

# The order values are listed in (anything else, such as districts, alphabetically).
_ORDER: dict[str, Sequence[str]] = {
    "risk_level": RISK_LEVELS,
    "need": SERVICES,
    "sex": (*SEXES, UNKNOWN),
    "age_band": (*AGE_BANDS, UNKNOWN),
    "status": tuple(s.value for s in ReferralStatus),
}


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, UTC)


def period(services: Services, start: date | None, end: date | None, default_days: int) -> Period:
    end = end or services.clock.now().date()
    start = start or end - timedelta(days=default_days - 1)
    if start > end:
        raise ValidationFailed("from is after to", {"from": ["must not be after to"]})
    if (end - start).days > MAX_RANGE_DAYS:
        raise ValidationFailed("the range is too long", {"to": [f"at most {MAX_RANGE_DAYS} days after from"]})
    return Period(start, end)


def parse_dimensions(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ("risk_level",)
    by = tuple(d.strip() for d in raw.split(","))
    wrong = [d for d in by if d not in statistics.DIMENSIONS]
    if wrong or not 1 <= len(by) <= 2 or len(set(by)) != len(by):
        raise ValidationFailed(
            "by names one or two different dimensions",
            {"by": [f"one or two of {', '.join(statistics.DIMENSIONS)}, separated by a comma"]},
        )
    return by


# -- statistics ---------------------------------------------------------------------------------------------
def _sort_key(dimension: str, value: str) -> tuple[int, str]:
    order = _ORDER.get(dimension)
    if order is not None and value in order:
        return (list(order).index(value), value)
    return (len(order) if order else 0, value)


def _values(row: Any, dimension: str) -> list[str]:
    """The values one referral has in a dimension: one each, but a need per need."""
    if dimension == "need":
        return list(dict.fromkeys(row.needs or [])) or [UNKNOWN]
    if dimension == "month":
        return [row.created_at.strftime("%Y-%m")]
    value = {
        "province": row.province,
        "district": row.district,
        "risk_level": row.risk_level,
        "sex": row.stat_sex,
        "age_band": row.stat_age_band,
        "status": row.status,
    }[dimension]
    return [value or UNKNOWN]


def statistics_report(
    services: Services,
    actor: Actor,
    by: Sequence[str],
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Referral counts by one or two dimensions over the period, small cells suppressed (see
    `domain/statistics.py`); the one-dimension tables of each dimension are protected exactly as
    `by=DIM` alone answers them, so the two answers together give nothing away either."""
    authorize(services, actor, Action.REPORT_STATISTICS)
    span = period(services, start, end, STATISTICS_DEFAULT_DAYS)
    threshold = services.settings.statistics_threshold
    query = (
        select(
            Referral.created_at,
            Referral.status,
            Referral.risk_level,
            Referral.needs,
            Subject.province,
            Subject.district,
            Subject.stat_sex,
            Subject.stat_age_band,
        )
        .join(Subject, Subject.id == Referral.subject_id)
        .where(Referral.created_at >= span.since, Referral.created_at < span.until)
    )
    with services.uow() as uow:
        rows = uow.session.execute(query).all()
    total = len(rows)
    ones = {d: Counter(v for r in rows for v in _values(r, d)) for d in by}
    tables = {d: statistics.protect_one(d, ones[d], total, threshold) for d in by}
    if len(by) == 1:
        (dim,) = by
        table = tables[dim]
        keys = sorted(table.cells, key=lambda k: _sort_key(dim, k[0]))
        total_hidden = table.total_suppressed
    else:
        first, second = by
        pairs: Counter[tuple[str, ...]] = Counter(
            (a, b) for r in rows for a in _values(r, first) for b in _values(r, second)
        )
        grid: dict[tuple[str, ...], int] = {(a, b): pairs.get((a, b), 0) for a in ones[first] for b in ones[second]}
        table = statistics.protect_two((first, second), grid, tables[first], tables[second], threshold)
        keys = sorted(table.cells, key=lambda k: (_sort_key(first, k[0]), _sort_key(second, k[1])))
        total_hidden = tables[first].total_suppressed and tables[second].total_suppressed
    cells = []
    for key in keys:
        hidden = key in table.suppressed
        cell: dict[str, Any] = dict(zip(by, key, strict=True))
        cell.update(count=None if hidden else table.cells[key], suppressed=hidden)
        cells.append(cell)
    return {
        "by": list(by),
        "from": span.start,
        "to": span.end,
        "threshold": threshold,
        "total": None if total_hidden else total,
        "cells": cells,
    }


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """A spreadsheet must not run a cell as a formula (CSV injection): such text is quoted with '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def statistics_csv(report: dict[str, Any]) -> str:
    """The statistics as CSV: one line per cell; a suppressed count reads "<T"."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*report["by"], "count"])
    for cell in report["cells"]:
        count = f"<{report['threshold']}" if cell["suppressed"] else cell["count"]
        writer.writerow([csv_safe(cell[d]) for d in report["by"]] + [csv_safe(count)])
    total = report["total"]
    writer.writerow(
        ["total"] + [""] * (len(report["by"]) - 1) + [csv_safe(total if total is not None else "suppressed")]
    )
    return out.getvalue()


# -- SLA --------------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (what PostgreSQL's percentile_cont does)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _hours(values: Iterable[float]) -> list[float]:
    return [v / 3600 for v in values]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def sla_report(services: Services, actor: Actor, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    """Per partner and risk level, for offers made in the period: how many were offered, accepted,
    declined (and why), expired; median and 90th percentile hours to accept and from acceptance to
    first contact (the first follow-up recorded); deadlines due in the period met in time and missed;
    and the cases each holds now."""
    authorize(services, actor, Action.REPORT_SLA)
    span = period(services, start, end, SLA_DEFAULT_DAYS)
    now = services.clock.now()
    first_contact = (
        select(FollowUp.assignment_id, func.min(FollowUp.recorded_at).label("at"))
        .group_by(FollowUp.assignment_id)
        .subquery()
    )
    offers = (
        select(
            Assignment.partner_id,
            Referral.risk_level,
            Assignment.status,
            Assignment.offered_at,
            Assignment.responded_at,
            Assignment.decline_reason,
            first_contact.c.at,
        )
        .join(Referral, Referral.id == Assignment.referral_id)
        .outerjoin(first_contact, first_contact.c.assignment_id == Assignment.id)
        .where(Assignment.offered_at >= span.since, Assignment.offered_at < span.until)
    )
    open_now = (
        select(Assignment.partner_id, Referral.risk_level, func.count())
        .join(Referral, Referral.id == Assignment.referral_id)
        .where(Assignment.status.in_([s.value for s in OPEN_ASSIGNMENT_STATUSES]))
        .group_by(Assignment.partner_id, Referral.risk_level)
    )
    deadlines = (
        select(Deadline.partner_id, Deadline.risk_level, Deadline.status, Deadline.fired_at, Deadline.due_at)
        .where(Deadline.due_at >= span.since, Deadline.due_at < span.until, Deadline.partner_id.is_not(None))
        .where(Deadline.status != DeadlineStatus.CANCELLED.value)
    )
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(_empty_row)
    accept_seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    contact_seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    accepted = {AssignmentStatus.ACCEPTED.value, AssignmentStatus.CLOSED.value}
    with services.uow() as uow:
        session = uow.session
        for partner_id, risk, status, offered_at, responded_at, reason, contact_at in session.execute(offers):
            key = (partner_id, risk)
            row = rows[key]
            row["offered"] += 1
            if status in accepted:
                row["accepted"] += 1
                if responded_at is not None:
                    accept_seconds[key].append((responded_at - offered_at).total_seconds())
                    if contact_at is not None:
                        contact_seconds[key].append(max(0.0, (contact_at - responded_at).total_seconds()))
            elif status == AssignmentStatus.DECLINED.value:
                row["declined"] += 1
                row["declines_by_reason"][reason or "other"] += 1
            elif status == AssignmentStatus.EXPIRED.value:
                row["expired"] += 1
        for partner_id, risk, status, fired_at, due_at in session.execute(deadlines):
            row = rows[(str(partner_id), risk)]
            if fired_at is not None or (status == DeadlineStatus.PENDING.value and due_at <= now):
                row["deadlines_missed"] += 1
            elif status == DeadlineStatus.MET.value:
                row["deadlines_met"] += 1
        for partner_id, risk, count in session.execute(open_now):
            rows[(partner_id, risk)]["open"] = count
    out = []
    for (partner_id, risk), row in sorted(rows.items(), key=lambda kv: (kv[0][0], RISK_LEVELS.index(kv[0][1]))):
        acc, con = _hours(accept_seconds[(partner_id, risk)]), _hours(contact_seconds[(partner_id, risk)])
        out.append(
            {
                "partner_id": partner_id,
                "risk_level": risk,
                **row,
                "declines_by_reason": dict(row["declines_by_reason"]),
                "median_hours_to_accept": _round(percentile(acc, 0.5)),
                "p90_hours_to_accept": _round(percentile(acc, 0.9)),
                "median_hours_to_first_contact": _round(percentile(con, 0.5)),
                "p90_hours_to_first_contact": _round(percentile(con, 0.9)),
            }
        )
    return {"from": span.start, "to": span.end, "rows": out}


def _empty_row() -> dict[str, Any]:
    return {
        "offered": 0,
        "accepted": 0,
        "declined": 0,
        "expired": 0,
        "deadlines_met": 0,
        "deadlines_missed": 0,
        "declines_by_reason": Counter(),
        "open": 0,
    }
