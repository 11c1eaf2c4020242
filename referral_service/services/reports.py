"""Reports: how well promises were kept (SLA, supervisors) and aggregate statistics (analysts too).

Neither opens a sealed field or names a person: the SLA counts assignments and deadlines per partner
and risk level; the statistics count referrals by coarse categories kept in the clear for that
purpose (`Subject.stat_sex`, `Subject.stat_age_band`, written at intake, cleared on erasure), with
small cells suppressed by `domain/statistics.py` before anything leaves this module.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, case, cast, func, or_, select

from referral_service.db.models import Assignment, Deadline, Referral, Subject
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


# Where each dimension's value lives; the counting is grouped in the database on these (a year of
# referrals is a few hundred groups, not 100,000 rows to carry into Python).
_SUBJECT_DIMENSIONS = {"province", "district", "sex", "age_band"}


def _dimension_column(dimension: str, dialect: str) -> Any:
    if dimension == "need":
        # Grouped by the stored list as text, split into needs after (one referral counts once per need).
        return cast(Referral.needs, String)
    if dimension == "month":
        if dialect == "postgresql":
            # The month's first instant in UTC, formatted after grouping (`_values`): to_char on each of
            # a year's rows cost more than the grouping itself.
            return func.date_trunc("month", func.timezone("UTC", Referral.created_at))
        return func.strftime("%Y-%m", Referral.created_at)  # SQLite keeps UTC, without an offset
    return {
        "province": Subject.province,
        "district": Subject.district,
        "risk_level": Referral.risk_level,
        "sex": Subject.stat_sex,
        "age_band": Subject.stat_age_band,
        "status": Referral.status,
    }[dimension]


def _values(value: Any, dimension: str) -> list[str]:
    """The values one group has in a dimension: one each, but a need per need."""
    if dimension == "need":
        needs = json.loads(value) if isinstance(value, str) else value
        return list(dict.fromkeys(needs or [])) or [UNKNOWN]
    if isinstance(value, datetime):  # a month on PostgreSQL (date_trunc in UTC)
        return [value.strftime("%Y-%m")]
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
    columns = [_dimension_column(d, services.engine.dialect.name) for d in by]
    query = (
        select(*columns, func.count())
        .select_from(Referral)
        .where(Referral.created_at >= span.since, Referral.created_at < span.until)
        .group_by(*columns)
    )
    if _SUBJECT_DIMENSIONS.intersection(by):
        query = query.join(Subject, Subject.id == Referral.subject_id)
    with services.uow() as uow:
        groups = [(tuple(row[:-1]), int(row[-1])) for row in uow.session.execute(query)]
    total = sum(n for _key, n in groups)
    ones: dict[str, Counter[str]] = {d: Counter() for d in by}
    for key, n in groups:
        for d, value in zip(by, key, strict=True):
            for v in _values(value, d):
                ones[d][v] += n
    tables = {d: statistics.protect_one(d, ones[d], total, threshold) for d in by}
    if len(by) == 1:
        (dim,) = by
        table = tables[dim]
        keys = sorted(table.cells, key=lambda k: _sort_key(dim, k[0]))
        total_hidden = table.total_suppressed
    else:
        first, second = by
        pairs: Counter[tuple[str, ...]] = Counter()
        for (x, y), n in groups:
            for a in _values(x, first):
                for b in _values(y, second):
                    pairs[(a, b)] += n
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
def sla_report(services: Services, actor: Actor, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    """Per partner and risk level, for offers made in the period: how many were offered, accepted,
    declined (and why), expired; median and 90th percentile hours to accept and from acceptance to
    first contact (the first follow-up recorded); deadlines due in the period met in time and missed;
    and the cases each holds now.

    The database does the work: counts are grouped there, and the percentiles are read off the
    ranked durations (a window function), so only a few rows per partner and risk level come back
    whatever the number of assignments."""
    authorize(services, actor, Action.REPORT_SLA)
    span = period(services, start, end, SLA_DEFAULT_DAYS)
    now = services.clock.now()
    dialect = services.engine.dialect.name
    in_period = (
        Assignment.offered_at >= span.since,
        Assignment.offered_at < span.until,
        Assignment.risk_level.is_not(None),
    )
    status = Assignment.status
    accepted = [AssignmentStatus.ACCEPTED.value, AssignmentStatus.CLOSED.value]

    def count_if(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    # One pass over the period's assignments, grouped by what the rows need, risk level and partner first:
    # the order of ix_assignments_sla (migration 0011), which holds every column read here, so the database
    # reads that index alone instead of the table or hopping from the offered_at index to each row.
    counts = (
        select(Assignment.risk_level, Assignment.partner_id, status, Assignment.decline_reason, func.count())
        .where(*in_period)
        .group_by(Assignment.risk_level, Assignment.partner_id, status, Assignment.decline_reason)
    )
    open_now = (
        select(Assignment.partner_id, Assignment.risk_level, func.count())
        .where(status.in_([s.value for s in OPEN_ASSIGNMENT_STATUSES]), Assignment.risk_level.is_not(None))
        .group_by(Assignment.partner_id, Assignment.risk_level)
    )
    missed = or_(
        Deadline.fired_at.is_not(None),
        and_(Deadline.status == DeadlineStatus.PENDING.value, Deadline.due_at <= now),
    )
    deadlines = (
        select(
            Deadline.partner_id,
            Deadline.risk_level,
            count_if(and_(Deadline.status == DeadlineStatus.MET.value, Deadline.fired_at.is_(None))),
            count_if(missed),
        )
        .where(Deadline.due_at >= span.since, Deadline.due_at < span.until, Deadline.partner_id.is_not(None))
        .where(Deadline.status != DeadlineStatus.CANCELLED.value)
        .group_by(Deadline.partner_id, Deadline.risk_level)
    )
    to_accept = _seconds(dialect, Assignment.offered_at, Assignment.responded_at)
    to_contact = _seconds(dialect, Assignment.responded_at, Assignment.first_followup_at)
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(_empty_row)
    with services.uow() as uow:
        session = uow.session
        for risk, partner_id, state, reason, n in session.execute(counts):
            row = rows[(partner_id, str(risk))]
            row["offered"] += n
            if state in accepted:
                row["accepted"] += n
            elif state == AssignmentStatus.DECLINED.value:
                row["declined"] += n
                row["declines_by_reason"][reason or "other"] += n
            elif state == AssignmentStatus.EXPIRED.value:
                row["expired"] += n
        for partner_id, risk, met, n_missed in session.execute(deadlines):
            row = rows[(str(partner_id), risk)]
            row["deadlines_met"], row["deadlines_missed"] = met or 0, n_missed or 0
        for partner_id, risk, n in session.execute(open_now):
            rows[(partner_id, str(risk))]["open"] = n
        where = (*in_period, status.in_(accepted))
        if dialect == "postgresql":
            accept_q, contact_q = _quantiles_postgres(session, (to_accept, to_contact), where)
        else:
            accept_q, contact_q = _quantiles(session, (to_accept, to_contact), where)
    out = []
    for (partner_id, risk), row in sorted(rows.items(), key=lambda kv: (kv[0][0], RISK_LEVELS.index(kv[0][1]))):
        acc, con = accept_q.get((partner_id, risk), {}), contact_q.get((partner_id, risk), {})
        out.append(
            {
                "partner_id": partner_id,
                "risk_level": risk,
                **row,
                "declines_by_reason": dict(row["declines_by_reason"]),
                "median_hours_to_accept": _hours(acc.get(0.5)),
                "p90_hours_to_accept": _hours(acc.get(0.9)),
                "median_hours_to_first_contact": _hours(con.get(0.5)),
                "p90_hours_to_first_contact": _hours(con.get(0.9)),
            }
        )
    return {"from": span.start, "to": span.end, "rows": out}


QUANTILES = (0.5, 0.9)


def _quantiles_postgres(
    session: Any, measures: Sequence[Any], where: Sequence[Any]
) -> list[dict[tuple[str, str], dict[float, float]]]:
    """As `_quantiles`, with PostgreSQL's ordered-set aggregate `percentile_cont` (NULLs left out):
    one grouped pass, no window to keep."""
    keys = (Assignment.risk_level, Assignment.partner_id)
    columns = [func.percentile_cont(q).within_group(m) for m in measures for q in QUANTILES]
    out: list[dict[tuple[str, str], dict[float, float]]] = [{} for _ in measures]
    for risk, partner_id, *values in session.execute(select(*keys, *columns).where(*where).group_by(*keys)):
        for k in range(len(measures)):
            picked = values[k * len(QUANTILES) : (k + 1) * len(QUANTILES)]
            if picked[0] is not None:
                out[k][(partner_id, str(risk))] = {q: float(v) for q, v in zip(QUANTILES, picked, strict=True)}
    return out


def _quantiles(
    session: Any, measures: Sequence[Any], where: Sequence[Any]
) -> list[dict[tuple[str, str], dict[float, float]]]:
    """Per partner and risk level, each of QUANTILES of each measure (seconds), interpolated between
    the closest ranks as PostgreSQL's percentile_cont: the database ranks the durations (one pass,
    a window function per measure) and returns only the rows at those ranks."""
    keys = (Assignment.risk_level, Assignment.partner_id)
    columns: list[Any] = [*keys]
    for k, seconds in enumerate(measures):
        columns += [
            seconds.label(f"v{k}"),
            # Non-null durations rank 0..n-1 (NULLs last), n counting those only.
            (func.row_number().over(partition_by=keys, order_by=seconds.nulls_last()) - 1).label(f"i{k}"),
            func.count(seconds).over(partition_by=keys).label(f"n{k}"),
        ]
    ranked = select(*columns).where(*where).subquery()
    wanted = []
    for k in range(len(measures)):
        i, n, v = ranked.c[f"i{k}"], ranked.c[f"n{k}"], ranked.c[f"v{k}"]
        for q in QUANTILES:  # floor((n-1)q) and ceil((n-1)q) in whole numbers, q in tenths
            tenths = round(q * 10)
            wanted += [
                and_(v.is_not(None), i == ((n - 1) * tenths) // 10),
                and_(v.is_not(None), i == ((n - 1) * tenths + 9) // 10),
            ]
    at: list[dict[tuple[str, str], dict[int, float]]] = [defaultdict(dict) for _ in measures]
    sizes: list[dict[tuple[str, str], int]] = [{} for _ in measures]
    for row in session.execute(select(ranked).where(or_(*wanted))).mappings():
        key = (row["partner_id"], str(row["risk_level"]))
        for k in range(len(measures)):
            if row[f"v{k}"] is not None:
                at[k][key][int(row[f"i{k}"])] = float(row[f"v{k}"])
                sizes[k][key] = int(row[f"n{k}"])
    out: list[dict[tuple[str, str], dict[float, float]]] = []
    for k in range(len(measures)):
        result: dict[tuple[str, str], dict[float, float]] = {}
        for key, values in at[k].items():
            size = sizes[k][key]
            result[key] = {}
            for q in QUANTILES:
                position = (size - 1) * q
                low, high = math.floor(position), math.ceil(position)
                if low in values and high in values:
                    result[key][q] = values[low] + (values[high] - values[low]) * (position - low)
        out.append(result)
    return out


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(max(0.0, seconds) / 3600, 2)


def _seconds(dialect: str, start: Any, end: Any) -> Any:
    """`end - start` in seconds, as the database computes it (NULL when either is NULL)."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


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
