"""Deadline scheduler and SLA report at scale, on the embedded profile (SQLite) or PostgreSQL.

1. 1,000,000 open deadlines (pending, due in the future): one scheduler tick with none due (goal
   ≤ 10 ms), then with 1,000 of them come due (goal ≤ 2 s for the tick that handles all 1,000: each
   becomes overdue, is written back and emits `followup.overdue` to the events exchange and the
   partner's queue through the outbox).
2. The SLA report over 1,000,000 assignments offered in the period (goal ≤ 2 s).

Rows are bulk-inserted with SQLAlchemy Core into a freshly migrated scratch database; the tick and
the report are the real service functions (`fire_due_deadlines`, `sla_report`). Each timing is the
best of `--repeat` runs (the due rows are made due again between runs).

    .venv/bin/python bench/deadlines.py                       # SQLite in a temporary folder
    .venv/bin/python bench/deadlines.py --deadlines 100000 --assignments 100000
    .venv/bin/python bench/deadlines.py --postgres           # a scratch database, dropped afterwards
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text, update

from referral_service.bootstrap import bootstrap, prepare_database
from referral_service.config import Settings
from referral_service.crypto.keyring import create_keyring
from referral_service.db.models import Assignment, Deadline, FollowUp, Partner, Referral, Subject, User
from referral_service.domain.model import Actor, Role
from referral_service.services.deadlines import fire_due_deadlines
from referral_service.services.reports import sla_report

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PARTNERS = 40
REFERRALS = 2000
CHUNK = 20_000


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def _chunks(rows: list[dict[str, Any]]) -> Any:
    for i in range(0, len(rows), CHUNK):
        yield rows[i : i + CHUNK]


def seed(services: Any, deadlines: int, assignments: int) -> None:
    rng = random.Random(11)
    engine = services.engine
    partner_ids = [f"p-bench-{i:02d}" for i in range(PARTNERS)]
    risks = ("critical", "high", "medium", "low")
    with engine.begin() as conn:
        conn.execute(
            insert(Partner),
            [
                {
                    "id": p,
                    "name": p,
                    "networks": [],
                    "services": ["medical"],
                    "provinces": [],
                    "districts": [],
                    "languages": [],
                    "capacity": 10_000,
                    "accepts_minors": True,
                    "staff_sex": [],
                    "active": True,
                    "offers_made": 0,
                    "offers_accepted": 0,
                    "response_seconds_total": 0,
                    "responses": 0,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for p in partner_ids
            ],
        )
        conn.execute(
            insert(User),
            [
                {
                    "id": "u-bench",
                    "name": "bench",
                    "role": "caseworker",
                    "active": True,
                    "created_at": NOW,
                    "failed_logins": 0,
                }
            ],
        )
        subjects = [
            {"id": str(uuid.uuid4()), "key_id": "none", "province": "Punjab", "district": "Lahore", "created_at": NOW}
            for _ in range(REFERRALS)
        ]
        conn.execute(insert(Subject), subjects)
        referrals = [
            {
                "id": str(uuid.uuid4()),
                "reference": f"VAN-BENCH-{i:07d}",
                "subject_id": s["id"],
                "caseworker_id": "u-bench",
                "status": "assigned",
                "risk_level": risks[i % 4],
                "needs": ["medical"],
                "staff_sex_preference": "any",
                "consent_given": True,
                "consent_share": [],
                "consent_recorded_by": "u-bench",
                "consent_recorded_at": NOW,
                "linked_existing_subject": False,
                "created_at": NOW - timedelta(days=20),
                "updated_at": NOW,
            }
            for i, s in enumerate(subjects)
        ]
        conn.execute(insert(Referral), referrals)
    # Assignments offered over the last 30 days: mostly closed, declined or expired (one open one per
    # referral at most, as the database requires).
    print(f"seeding {assignments:,} assignments ...", flush=True)
    open_ids: list[tuple[str, str, str]] = []
    rows: list[dict[str, Any]] = []
    followups: list[dict[str, Any]] = []
    for i in range(assignments):
        r = referrals[i % REFERRALS]
        offered = NOW - timedelta(days=30) + timedelta(seconds=rng.randrange(29 * 86400))
        first_of_referral = i < REFERRALS
        status = "accepted" if first_of_referral else rng.choice(("closed", "closed", "declined", "expired"))
        responded = offered + timedelta(minutes=rng.randrange(5, 3000)) if status != "expired" else offered
        aid = str(uuid.uuid4())
        contact = None
        if status in ("accepted", "closed") and rng.random() < 0.8:
            contact = responded + timedelta(minutes=rng.randrange(10, 5000))
            followups.append(
                {
                    "id": str(uuid.uuid4()),
                    "assignment_id": aid,
                    "referral_id": r["id"],
                    "outcome": "contacted",
                    "recorded_by": "u-bench",
                    "recorded_at": contact,
                }
            )
        rows.append(
            {
                "id": aid,
                "referral_id": r["id"],
                "partner_id": partner_ids[i % PARTNERS],
                "service": "medical",
                "status": status,
                "reasons": [],
                "offered_at": offered,
                "responded_at": responded,
                "decline_reason": "no_capacity" if status == "declined" else None,
                "version": 1,
                "risk_level": r["risk_level"],
                "first_followup_at": contact,
            }
        )
        if first_of_referral:
            open_ids.append((aid, r["id"], partner_ids[i % PARTNERS]))
    # In the order they were offered, as a live database receives them (rowid order follows time).
    rows.sort(key=lambda row: row["offered_at"])
    with engine.begin() as conn:
        for chunk in _chunks(rows):
            conn.execute(insert(Assignment), chunk)
        for chunk in _chunks(followups):
            conn.execute(insert(FollowUp), chunk)
    print(f"seeding {deadlines:,} open deadlines ...", flush=True)
    with engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(deadlines):
            aid, rid, pid = open_ids[i % len(open_ids)]
            due = NOW + timedelta(hours=1) + timedelta(seconds=rng.randrange(60 * 86400))
            batch.append(
                {
                    "id": str(uuid.uuid4()),
                    "referral_id": rid,
                    "assignment_id": aid,
                    "partner_id": pid,
                    "kind": "followup",
                    "risk_level": "high",
                    "due_at": due,
                    "wake_at": due,
                    "status": "pending",
                    "reminders": 0,
                }
            )
            if len(batch) == CHUNK:
                conn.execute(insert(Deadline), batch)
                batch = []
        if batch:
            conn.execute(insert(Deadline), batch)
        if engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE deadlines"))
            conn.execute(text("ANALYZE assignments"))


def make_due(services: Any, count: int) -> list[str]:
    """`count` of the open deadlines come due one minute ago (notice already sent)."""
    with services.engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM deadlines ORDER BY id LIMIT :n"), {"n": count})]
        conn.execute(
            update(Deadline)
            .where(Deadline.id.in_(ids))
            .values(
                status="pending",
                due_at=NOW - timedelta(minutes=1),
                wake_at=NOW - timedelta(minutes=1),
                noticed_at=NOW - timedelta(hours=1),
                reminders=0,
                fired_at=None,
            )
        )
    return ids


def check_quantiles(services: Any, row: dict[str, Any]) -> None:
    """The database's ranked quantiles agree with Python's over the same durations (one row)."""
    with services.engine.connect() as conn:
        pairs = conn.execute(
            select(Assignment.offered_at, Assignment.responded_at).where(
                Assignment.partner_id == row["partner_id"],
                Assignment.risk_level == row["risk_level"],
                Assignment.status.in_(["accepted", "closed"]),
                Assignment.offered_at >= NOW - timedelta(days=30),
            )
        ).all()
    hours = sorted((b - a).total_seconds() / 3600 for a, b in pairs)
    for q, key in ((0.5, "median_hours_to_accept"), (0.9, "p90_hours_to_accept")):
        position = (len(hours) - 1) * q
        low, high = int(position), min(int(position) + 1, len(hours) - 1)
        expected = hours[low] + (hours[high] - hours[low]) * (position - low)
        assert abs(expected - row[key]) < 0.01, (key, expected, row[key])


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deadlines", type=int, default=1_000_000)
    parser.add_argument("--assignments", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--postgres", action="store_true", help=f"a scratch PostgreSQL database on {PG_ADMIN_URL} (default: SQLite)"
    )
    args = parser.parse_args()
    if not args.postgres:
        run(args, None)
        return
    name = f"bench_deadlines_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        run(args, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(args: argparse.Namespace, database_url: str | None) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-deadlines-"))
    env = {"REFERRAL_HOME": str(home)}
    if database_url:
        env["REFERRAL_DATABASE_URL"] = database_url
        env["REFERRAL_KEYRING"] = str(home / "keyring.json")
    settings = Settings.from_env(env)
    create_keyring(settings.keyring_path)
    services = bootstrap(settings, clock=Clock(NOW))
    prepare_database(services)
    seed(services, args.deadlines, args.assignments)
    results: dict[str, Any] = {
        "database": services.engine.dialect.name,
        "open_deadlines": args.deadlines,
        "assignments": args.assignments,
    }

    idle = min(timed(lambda: fire_due_deadlines(services, batch_size=args.due))[0] for _ in range(args.repeat))
    results["tick_none_due_ms"] = round(idle * 1000, 2)
    busy = []
    for _ in range(args.repeat):
        make_due(services, args.due)
        seconds, handled = timed(lambda: fire_due_deadlines(services, batch_size=args.due))
        assert handled == args.due, handled
        busy.append(seconds)
    results[f"tick_{args.due}_due_s"] = round(min(busy), 3)
    supervisor = Actor("u-bench", Role.SUPERVISOR, None, "bench")
    sla = []
    for _ in range(args.repeat):
        seconds, report = timed(lambda: sla_report(services, supervisor, (NOW - timedelta(days=30)).date(), NOW.date()))
        sla.append(seconds)
    results["sla_report_s"] = round(min(sla), 3)
    check_quantiles(services, report["rows"][0])
    results["sla_rows"] = len(report["rows"])
    results["sla_offered"] = sum(r["offered"] for r in report["rows"])
    print(json.dumps(results, indent=2))
    services.dispose()


if __name__ == "__main__":
    main()
