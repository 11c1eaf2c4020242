"""Web pages' response times, one request at a time with no other load (issue 13).

Goals: the pages a caseworker uses (the new-referral form, "my referrals" with 50 of their own, a
referral page) answer in ≤ 50 ms p95; supervisors' lists and reports with 100,000 referrals in the
database in ≤ 200 ms p95.

What it does:

1. A fresh embedded home (`referral-service init`), or with `--production` a scratch PostgreSQL database
   and RabbitMQ vhost (`bench/pipeline.py::scratch`); the bench partners of `bench/pipeline.py`.
2. Seeding, in this process through the service layer (`submit_referral`, then partner staff's
   `assignments.accept / record_followup / close / decline`), while the real service routes and audits
   them: the caseworker's 50 referrals, and `--templates` referrals of other caseworkers in a spread of
   districts, risks, needs, sexes, ages, consent, some sharing a CNIC (possible duplicates) and some in
   districts no partner serves (unroutable). Then, because 100,000 submits take too long (about 6 ms of
   CPU each plus routing and audit on this machine), the rest up to `--total` are copies of those
   templates: each copy gets a new subject through the real vault (its own data key, every field sealed
   under it, blind indexes by the real matcher), its own incident sealed under that key, a new
   reference, and the template's assignments, follow-ups, routing decisions and deadlines with new ids.
   Copies of closed or unroutable cases are spread over the past year; copies of open cases keep the
   template's times (within seconds), so no timer fires during the run. Copies get no audit entries,
   outbox rows or sealed partner notes (their templates have them).
3. The real HTTP server as users run it: `referral-service run` (embedded) or `referral-service serve`
   (gunicorn) with `referral-service worker all` (production).
4. Signs in through the web form (GET /login for the CSRF token and cookie, POST name + password) as a
   caseworker, a supervisor, an auditor and an admin; API calls use the bearer tokens `users create` gave.
5. Each page: `--warmup` requests, then `--requests` timed ones, sequentially on one keep-alive connection;
   p50/p95/p99 with the goal and PASS/FAIL, load average before and after.

    .venv/bin/python bench/pages.py                          # embedded, 100,000 referrals
    .venv/bin/python bench/pages.py --production
    .venv/bin/python bench/pages.py --keep /tmp/pages-home   # seed once, reuse the home next time
    .venv/bin/python bench/pages.py --production --keep /tmp/pages-pg   # the same, scratch database kept
    .venv/bin/python bench/pages.py --json /tmp/pages.json --requests 200 --warmup 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Engine, Table, create_engine, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from intake import Stack, cli, free_port, wait_http  # noqa: E402
from pipeline import DISTRICTS, bench_partners, percentile, scratch  # noqa: E402

from referral_service.bootstrap import Services, bootstrap  # noqa: E402
from referral_service.config import Settings  # noqa: E402
from referral_service.db.models import (  # noqa: E402
    Assignment,
    Deadline,
    FollowUp,
    Referral,
    RoutingDecision,
    Subject,
    new_id,
)
from referral_service.domain.commands import (  # noqa: E402
    AcceptAssignment,
    CloseAssignment,
    DeclineAssignment,
    RecordFollowUp,
)
from referral_service.domain.model import Actor, Role  # noqa: E402
from referral_service.services import assignments, partners, users  # noqa: E402
from referral_service.services.common import next_counter  # noqa: E402
from referral_service.services.referrals import submit_referral  # noqa: E402
from schemas import PartnerSchema, ReferralInputSchema  # noqa: E402

CASEWORKER_GOAL_MS = 50.0
SUPERVISOR_GOAL_MS = 200.0
PASSWORD = "bench pages password 1"  # noqa: S105 - the bench users' own, in a scratch home
# Districts no bench partner serves: their referrals end unroutable, as some do in the field.
UNSERVED = [("Sindh", "Hyderabad"), ("Punjab", "Multan")]
# What the bench partners offer (a need nobody offers would leave a case routing for ever here).
NEEDS = [["medical"], ["psychosocial"], ["medical", "psychosocial"]]
RISKS = ["low", "medium", "high", "critical"]
SEXES = ["female", "male", "female", "other", "undisclosed"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def body(i: int, rng: random.Random) -> dict[str, Any]:
    """A valid referral body; about 3 % in unserved districts, 2 % without consent, 5 % reusing an earlier
    CNIC (a possible duplicate for supervisors)."""
    roll = rng.random()
    province, district = rng.choice(UNSERVED) if roll < 0.03 else DISTRICTS[i % len(DISTRICTS)]
    cnic_n = rng.randrange(max(i, 1)) if 0.03 <= roll < 0.08 and i > 10 else i
    year = rng.randrange(1950, 2015)
    return {
        "subject": {
            "full_name": f"Bench Person {i}",
            "date_of_birth": f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "sex": rng.choice(SEXES),
            "cnic": f"{35000 + cnic_n // 10_000_000:05d}-{cnic_n % 10_000_000:07d}-{cnic_n % 10}",
            "phone": f"+923{(400_000_000 + i) % 1_000_000_000:09d}",
            "address": f"House {i % 300}, Street {i % 40}",
            "province": province,
            "district": district,
            "preferred_language": rng.choice(["ur", "en", "ps"]),
        },
        "incident": {"type": "bombing", "date": "2026-01-02", "narrative": f"bench narrative {i}"},
        "needs": rng.choice(NEEDS),
        "risk_level": rng.choice(RISKS),
        "consent": {"given": not (0.08 <= roll < 0.10), "method": "verbal", "share": ["contact", "incident"]},
        "preferences": {"staff_sex": "any"},
    }


# -- the profile ---------------------------------------------------------------------------------------
@dataclass
class Bench:
    profile: str
    env: dict[str, str]
    workdir: Path
    services: Services
    engine: Engine
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeding: dict[str, Any] = field(default_factory=dict)


def start_server(bench: Bench, stack: Stack) -> str:
    port = free_port()
    if bench.profile == "embedded":
        stack.start("run", [sys.executable, "-m", "referral_service", "run", "--port", str(port)])
    else:
        stack.start("serve", [sys.executable, "-m", "referral_service", "serve", "--port", str(port), "--workers", "2"])
        stack.start("worker-all", [sys.executable, "-m", "referral_service", "worker", "all"]).wait_line(
            "worker all running"
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz")
    return url


def backlog(engine: Engine) -> dict[str, int]:
    """What the workers still have to do: unpublished outbox rows, unsequenced audit entries, consented
    referrals not routed yet."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL),"
                " (SELECT count(*) FROM audit_entries WHERE idx IS NULL),"
                " (SELECT count(*) FROM referrals WHERE consent_given AND status = 'submitted')"
            )
        ).one()
    return {"outbox": row[0], "audit": row[1], "unrouted": row[2]}


def drain(engine: Engine, timeout: float = 900.0) -> float:
    started = time.monotonic()
    quiet = 0
    # Twice in a row, a second apart: a published event (a decline) may still be in the router's hands.
    while quiet < 2:
        left = backlog(engine)
        quiet = 0 if any(left.values()) else quiet + 1
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the workers did not catch up in {timeout:.0f} s: {left}")
        time.sleep(0.5 if quiet == 0 else 1.0)
    return time.monotonic() - started


def make_people(bench: Bench) -> None:
    services = bench.services
    for role in ("caseworker", "supervisor", "auditor", "admin"):
        made = users.create_user(services, name=f"bench-{role}", role=role, password=PASSWORD)
        bench.people[role] = {"id": made["id"], "name": made["name"], "token": made["token"]}
    for k in range(3):  # the other caseworkers, whose referrals fill the supervisors' lists
        made = users.create_user(services, name=f"bench-colleague-{k}", role="caseworker")
        bench.people[f"colleague-{k}"] = {"id": made["id"], "name": made["name"], "token": made["token"]}
    for p in bench_partners():
        made = users.create_user(services, name=f"bench-staff-{p['id']}", role="partner", partner_id=p["id"])
        bench.people[f"partner:{p['id']}"] = {"id": made["id"], "name": made["name"], "token": made["token"]}


def actor(bench: Bench, key: str) -> Actor:
    person = bench.people[key]
    role = Role.PARTNER if key.startswith("partner:") else Role.CASEWORKER if key.startswith("colleague") else Role(key)
    return Actor(user_id=person["id"], role=role, partner_id=key.split(":", 1)[1] if ":" in key else None)


def submit_all(bench: Bench, templates: int, rng: random.Random) -> list[str]:
    schema = ReferralInputSchema()
    ids: list[str] = []
    for i in range(50):
        out = submit_referral(bench.services, schema.load(body(i, rng)), actor(bench, "caseworker"))
        ids.append(out.body["id"])
    for i in range(50, 50 + templates):
        out = submit_referral(bench.services, schema.load(body(i, rng)), actor(bench, f"colleague-{i % 3}"))
        ids.append(out.body["id"])
    return ids


def lifecycle(bench: Bench, referral_ids: list[str], rng: random.Random) -> dict[str, int]:
    """Partner staff act on the offers as in a service a year old: most cases closed, some open at each
    stage, a few declined (routed onward; with one partner per district they end unroutable)."""
    done: dict[str, int] = {"accepted": 0, "followed_up": 0, "closed": 0, "declined": 0}
    with bench.engine.connect() as conn:
        offers = conn.execute(
            select(Assignment.id, Assignment.partner_id, Assignment.service)
            .where(Assignment.status == "offered", Assignment.referral_id.in_(referral_ids))
            .order_by(Assignment.offered_at)
        ).all()
    for assignment_id, partner_id, service in offers:
        staff = actor(bench, f"partner:{partner_id}")
        roll = rng.random()
        if roll < 0.05:
            assignments.decline(bench.services, DeclineAssignment(assignment_id, "no_capacity"), staff)
            done["declined"] += 1
            continue
        if roll >= 0.92:  # still offered
            continue
        assignments.accept(bench.services, AcceptAssignment(assignment_id), staff)
        done["accepted"] += 1
        if roll >= 0.85:  # accepted, no contact yet
            continue
        assignments.record_followup(bench.services, RecordFollowUp(assignment_id, "contacted", "bench note"), staff)
        done["followed_up"] += 1
        if roll >= 0.75:  # in service
            continue
        assignments.close(
            bench.services, CloseAssignment(assignment_id, "services_delivered", "bench note", [service]), staff
        )
        done["closed"] += 1
    return done


def _rows(conn: Any, model: Any, column: Any, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(select(model).where(column.in_(ids))).mappings():
        item = dict(row)
        out.setdefault(item[column.key], []).append(item)
    return out


def _shift(row: dict[str, Any], delta: timedelta, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: (v - delta if isinstance(v, datetime) and k not in skip else v) for k, v in row.items()}


def copy_templates(bench: Bench, template_ids: list[str], total: int, rng: random.Random) -> int:
    """Copies of the templates up to `total` referrals (see the module's docstring)."""
    services, schema = bench.services, ReferralInputSchema()
    with bench.engine.connect() as conn:
        have = conn.scalar(select(func.count()).select_from(Referral)) or 0
        refs = {r["id"]: r for r in (dict(m) for m in conn.execute(select(Referral.__table__)).mappings())}
        tables = {
            "assignments": _rows(conn, Assignment.__table__, Assignment.__table__.c.referral_id, template_ids),
            "followups": _rows(conn, FollowUp.__table__, FollowUp.__table__.c.referral_id, template_ids),
            "routing_decisions": _rows(
                conn, RoutingDecision.__table__, RoutingDecision.__table__.c.referral_id, template_ids
            ),
            "deadlines": _rows(conn, Deadline.__table__, Deadline.__table__.c.referral_id, template_ids),
        }
        subjects = {
            s["id"]: s
            for s in (dict(m) for m in conn.execute(select(Subject.district, Subject.province, Subject.id)).mappings())
        }
    to_make = max(0, total - have)
    year_ago = timedelta(days=364)
    batch = 1000
    made = 0
    while made < to_make:
        with services.uow() as uow:
            session = uow.session
            now = services.clock.now()
            new: dict[str, list[dict[str, Any]]] = {k: [] for k in ("referrals", *tables)}
            for _ in range(min(batch, to_make - made)):
                n = have + made
                template = refs[template_ids[n % len(template_ids)]]
                place = subjects[template["subject_id"]]
                raw = body(n, rng)
                raw["subject"].update(province=place["province"], district=place["district"])
                # 00001-… CNICs and 0300… phones: never one of the templates', so no new duplicates.
                raw["subject"]["cnic"] = f"{10000 + n // 10_000_000:05d}-{n % 10_000_000:07d}-1"
                raw["subject"]["phone"] = f"+92300{n % 10_000_000:07d}"
                cmd = schema.load(raw)
                subject = services.vault.create_subject(session, cmd.subject, now)
                services.matcher.index_subject(session, subject, cmd.subject.cnic, cmd.subject.phone)
                finished = template["status"] in ("closed", "unroutable", "withdrawn")
                delta = (
                    timedelta(seconds=rng.uniform(0, year_ago.total_seconds()))
                    if finished
                    else timedelta(microseconds=rng.randrange(1, 10_000_000))
                )
                rid = new_id()
                ref = _shift(template, delta)
                ref.update(
                    id=rid,
                    subject_id=subject.id,
                    reference=f"VAN-{now.year}-{next_counter(session, f'referral-{now.year}'):06d}",
                    incident_ct=services.vault.seal(
                        session, subject, "referrals", "incident", rid, json.dumps(raw["incident"])
                    ),
                )
                new["referrals"].append(ref)
                ids: dict[str, str] = {}
                for a in tables["assignments"].get(template["id"], []):
                    ids[a["id"]] = new_id()
                    new["assignments"].append(
                        {**_shift(a, delta), "id": ids[a["id"]], "referral_id": rid, "note_ct": None}
                    )
                for f in tables["followups"].get(template["id"], []):
                    new["followups"].append(
                        {
                            **_shift(f, delta),
                            "id": new_id(),
                            "referral_id": rid,
                            "assignment_id": ids[f["assignment_id"]],
                            "note_ct": None,
                        }
                    )
                for d in tables["routing_decisions"].get(template["id"], []):
                    new["routing_decisions"].append({**_shift(d, delta), "id": new_id(), "referral_id": rid})
                for d in tables["deadlines"].get(template["id"], []):
                    new["deadlines"].append(
                        {
                            **_shift(d, delta),
                            "id": new_id(),
                            "referral_id": rid,
                            "assignment_id": ids.get(d["assignment_id"]) if d["assignment_id"] else None,
                        }
                    )
                made += 1
            session.flush()
            for name, model in (
                ("referrals", Referral),
                ("assignments", Assignment),
                ("followups", FollowUp),
                ("routing_decisions", RoutingDecision),
                ("deadlines", Deadline),
            ):
                if new[name]:
                    session.execute(insert(cast(Table, model.__table__)), new[name])
            uow.commit()
        if made % 10_000 < batch:
            print(f"  copies: {made:,} of {to_make:,}", flush=True)
    return made


def seed(bench: Bench, stack: Stack, templates: int, total: int) -> str:
    """Everything but the copies goes through the service while it runs; returns the server's URL."""
    rng = random.Random(13)
    started = time.monotonic()
    make_people(bench)
    url = start_server(bench, stack)
    t = time.monotonic()
    ids = submit_all(bench, templates, rng)
    submitted_s = time.monotonic() - t
    routed_s = drain(bench.engine)
    t = time.monotonic()
    moves = lifecycle(bench, ids, rng)
    moved_s = time.monotonic() - t
    drain(bench.engine)
    t = time.monotonic()
    copies = copy_templates(bench, ids[50:], total, rng)
    copied_s = time.monotonic() - t
    drain(bench.engine)
    if bench.profile == "production":
        # Planner statistics and visibility maps as autovacuum keeps them in a database that grew over time
        # (since PostgreSQL 13 it vacuums tables that only grow, too); right after the bulk copy the
        # statistics still describe the 2,000 templates, and PostgreSQL chose sequential scans (30 ms of a
        # "my referrals" page for its assignments, 0.35 ms after ANALYZE), and without a visibility map no
        # scan is index-only (the reports' covering indexes of migration 0011).
        with bench.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    with bench.engine.connect() as conn:
        counts = {
            table: conn.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - our own table names
            for table in (
                "referrals",
                "subjects",
                "assignments",
                "followups",
                "deadlines",
                "possible_duplicates",
                "audit_entries",
            )
        }
        statuses: dict[str, int] = {
            str(k): int(v) for k, v in conn.execute(text("SELECT status, count(*) FROM referrals GROUP BY status"))
        }
    bench.seeding = {
        "through_service": 50 + templates,
        "submit_s": round(submitted_s, 1),
        "routed_s": round(routed_s, 1),
        "lifecycle": moves,
        "lifecycle_s": round(moved_s, 1),
        "copies": copies,
        "copy_s": round(copied_s, 1),
        "total_s": round(time.monotonic() - started, 1),
        "rows": counts,
        "statuses": statuses,
    }
    return url


@contextmanager
def profile_env(production: bool, keep: Path | None) -> Iterator[tuple[str, dict[str, str], Path, bool]]:
    """(profile, REFERRAL_* environment, work folder, already seeded)."""
    if production:
        saved = keep / "bench-seeded.json" if keep else None
        if saved is not None and saved.exists():
            # A scratch database, vhost and keyring left by an earlier `--production --keep DIR` run.
            env = json.loads(saved.read_text())["env"]
            yield "production", env, Path(env["REFERRAL_HOME"]), True
            return
        with scratch(keep is not None) as made:
            # Plain HTTP on loopback here, so the session cookie may not be marked Secure.
            yield "production", {**made, "REFERRAL_INSECURE_COOKIES": "1"}, Path(made["REFERRAL_HOME"]), False
        return
    home = keep or Path(tempfile.mkdtemp(prefix="referral-pages-"))
    seeded = (home / "bench-seeded.json").exists()
    home.mkdir(parents=True, exist_ok=True)
    for name in ("REFERRAL_DATABASE_URL", "REFERRAL_BROKER_URL", "REFERRAL_KEYRING"):
        os.environ.pop(name, None)
    try:
        yield "embedded", {"REFERRAL_HOME": str(home), "REFERRAL_INSECURE_COOKIES": "1"}, home, seeded
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)


# -- a browser ---------------------------------------------------------------------------------------
class Browser:
    """One keep-alive connection; the session cookie as a browser keeps it; the CSRF token from the form."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.cookies: dict[str, str] = {}
        self.bearer: str | None = None

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, float]:
        headers = {"Accept-Language": "en"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        data = None
        if form is not None:
            data = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        t = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            answer = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the idle keep-alive connection (another role's pages took minutes):
            # a browser opens a new one; the warm-ups take that cost.
            self.conn.close()
            t = time.perf_counter()
            self.conn.request(method, path, body=data, headers=headers)
            answer = self.conn.getresponse()
        content = answer.read()
        elapsed = (time.perf_counter() - t) * 1000
        for header, value in answer.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return answer.status, content.decode("utf-8", "replace"), elapsed

    def sign_in(self, name: str) -> None:
        status, page, _ms = self.request("GET", "/login")
        token = _CSRF.search(page)
        if status != 200 or token is None:
            raise RuntimeError(f"GET /login: {status}, no CSRF token")
        status, _page, _ms = self.request(
            "POST", "/login", {"name": name, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        if status != 302:
            raise RuntimeError(f"signing in as {name}: {status}")


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class Page:
    who: str
    label: str
    path: str
    goal_ms: float
    check: Callable[[str], bool] | None = None


def measure(browser: Browser, page: Page, warmup: int, requests: int, budget_s: float) -> dict[str, Any]:
    """`requests` timed requests, fewer (at least 20) when the warm-ups say they would take over `budget_s`:
    a page of several seconds would otherwise hold the run for many minutes."""
    times: list[float] = []
    failures: list[int] = []
    sample = ""
    for _ in range(warmup):
        status, sample, ms = browser.request("GET", page.path)
        times.append(ms)
        if status != 200:
            failures.append(status)
    if times and budget_s:
        requests = max(20, min(requests, int(budget_s * 1000 / (sum(times) / len(times)))))
    times = []
    for _ in range(requests):
        status, sample, ms = browser.request("GET", page.path)
        if status != 200:
            failures.append(status)
        times.append(ms)
    checked = page.check(sample) if page.check else True
    p95 = percentile(times, 95)
    return {
        "who": page.who,
        "page": page.label,
        "path": page.path,
        "goal_ms": page.goal_ms,
        "p50_ms": round(percentile(times, 50), 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(percentile(times, 99), 1),
        "max_ms": round(max(times), 1),
        "requests": len(times),
        "bytes": len(sample.encode()),
        "failures": len(failures),
        "failure_statuses": sorted(set(failures)),
        "content_ok": checked,
        "pass": p95 <= page.goal_ms and not failures and checked,
        "times_ms": [round(t, 2) for t in times],
    }


def pages(bench: Bench, url: str) -> list[tuple[Browser, Page]]:
    cw, sup, aud, adm = (Browser(url) for _ in range(4))
    cw.sign_in(bench.people["caseworker"]["name"])
    sup.sign_in(bench.people["supervisor"]["name"])
    aud.sign_in(bench.people["auditor"]["name"])
    adm.sign_in(bench.people["admin"]["name"])
    cw_api, sup_api = Browser(url), Browser(url)
    cw_api.bearer = bench.people["caseworker"]["token"]
    sup_api.bearer = bench.people["supervisor"]["token"]
    with bench.engine.connect() as conn:
        own = conn.execute(
            select(Referral.id)
            .join(Assignment, Assignment.referral_id == Referral.id)
            .where(Referral.caseworker_id == bench.people["caseworker"]["id"], Assignment.status == "accepted")
            .limit(1)
        ).scalar()
        other = conn.execute(
            select(Referral.id).where(Referral.status == "closed").order_by(Referral.created_at).limit(1)
        ).scalar()
    status, first, _ms = cw.request("GET", "/referrals")
    cursor = re.search(r'href="[^"]*cursor=([^"&]+)', first)
    today = datetime.now(UTC).date()
    year = urlencode({"from": (today - timedelta(days=364)).isoformat(), "to": today.isoformat()})
    cw_goal, sup_goal = CASEWORKER_GOAL_MS, SUPERVISOR_GOAL_MS
    out: list[tuple[Browser, Page]] = [
        (cw, Page("caseworker", "new-referral form", "/referrals/new", cw_goal)),
        (cw, Page("caseworker", "my referrals, page 1 (25 of 50)", "/referrals", cw_goal)),
    ]
    if cursor:
        out.append(
            (cw, Page("caseworker", "my referrals, page 2 (25 of 50)", f"/referrals?cursor={cursor.group(1)}", cw_goal))
        )
    out += [
        (cw, Page("caseworker", "referral page (accepted, followed up)", f"/referrals/{own}", cw_goal)),
        (
            cw_api,
            Page(
                "caseworker",
                "API my referrals ?limit=50",
                "/api/v1/referrals?limit=50",
                cw_goal,
                lambda s: len(json.loads(s)["items"]) == 50,
            ),
        ),
        (sup, Page("supervisor", "supervision", "/supervision", sup_goal)),
        (sup, Page("supervisor", "all referrals, page 1", "/referrals", sup_goal)),
        (sup, Page("supervisor", "all referrals, status=closed", "/referrals?status=closed", sup_goal)),
        (sup, Page("supervisor", "all referrals, status=unroutable", "/referrals?status=unroutable", sup_goal)),
        (sup, Page("supervisor", "a referral page (closed)", f"/referrals/{other}", sup_goal)),
        (sup, Page("supervisor", "reports (defaults: statistics 365 d, SLA 30 d)", "/reports", sup_goal)),
        (
            sup,
            Page("supervisor", "reports, a year, by district × month", f"/reports?{year}&by=district,month", sup_goal),
        ),
        (
            sup,
            Page(
                "supervisor",
                "statistics CSV, a year, by need × risk",
                f"/reports/statistics.csv?{year}&by=need,risk_level",
                sup_goal,
            ),
        ),
        (sup_api, Page("supervisor", "API SLA report, a year", f"/api/v1/reports/sla?{year}", sup_goal)),
        (
            sup_api,
            Page(
                "supervisor",
                "API statistics, a year, by district × month",
                f"/api/v1/reports/statistics?{year}&by=district,month",
                sup_goal,
            ),
        ),
        (sup_api, Page("supervisor", "API overdue deadlines", "/api/v1/deadlines/overdue", sup_goal)),
        (sup_api, Page("supervisor", "API possible duplicates", "/api/v1/duplicates", sup_goal)),
        (sup_api, Page("supervisor", "API all referrals ?limit=50", "/api/v1/referrals?limit=50", sup_goal)),
        (aud, Page("auditor", "audit log", "/audit", sup_goal)),
        (adm, Page("admin", "deliveries", "/deliveries", sup_goal)),
    ]
    _ = status
    return out


def report(results: list[dict[str, Any]]) -> None:
    print(f"{'who':<11} {'page':<48} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'goal':>5}  result", flush=True)
    for r in results:
        verdict = "PASS" if r["pass"] else "FAIL"
        extra = ""
        if r["failures"]:
            extra += f" ({r['failures']} non-200: {r['failure_statuses']})"
        if not r["content_ok"]:
            extra += " (content check failed)"
        print(
            f"{r['who']:<11} {r['page'][:48]:<48} {r['requests']:>4} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['goal_ms']:>5.0f}  {verdict}{extra}",
            flush=True,
        )


def profile_pages(bench: Bench, results: list[dict[str, Any]], requests: int, top: int) -> dict[str, str]:
    """cProfile of each page that missed its goal, in this process through Flask's test client on the same
    database (signed in through the same form): the frames by cumulative time, the service's own first."""
    import cProfile
    import io
    import pstats

    from referral_service.app import create_app

    app = create_app(bench.services)
    clients: dict[tuple[str, bool], Any] = {}
    out: dict[str, str] = {}
    for r in results:
        if r["pass"]:
            continue
        api = r["path"].startswith("/api/")
        client = clients.get((r["who"], api))
        if client is None:
            client = clients[(r["who"], api)] = app.test_client()
            if api:
                client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {bench.people[r['who']]['token']}"
            else:
                found = _CSRF.search(client.get("/login").get_data(as_text=True))
                assert found is not None
                form = {"name": bench.people[r["who"]]["name"], "password": PASSWORD, "csrf_token": found[1]}
                signed = client.post("/login", data=form)
                assert signed.status_code == 302, signed.status_code
        for _ in range(3):
            client.get(r["path"])
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            client.get(r["path"])
        profiler.disable()
        text_out = io.StringIO()
        stats = pstats.Stats(profiler, stream=text_out)
        stats.sort_stats("cumulative").print_stats(r"referral_service|schemas|jinja2|sqlalchemy/engine", top)
        text_out.write("\n-- by own time --\n")
        stats.sort_stats("tottime").print_stats(top)
        out[r["page"]] = text_out.getvalue()
        print(f"\n== cProfile, {requests} requests: {r['who']} {r['page']} ({r['path']})", flush=True)
        print(_trim_profile(out[r["page"]]), flush=True)
    return out


def _trim_profile(report: str) -> str:
    """pstats' tables without its preamble, with the folder prefix of each file cut short."""
    lines = [
        ln for ln in report.splitlines() if ln.strip() and not ln.lstrip().startswith(("Ordered by", "List reduced"))
    ]
    return "\n".join(re.sub(r"/\S*/(site-packages|wt-pages)/", "", ln) for ln in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--production", action="store_true", help="PostgreSQL + RabbitMQ, serve + worker all")
    parser.add_argument("--total", type=int, default=100_000, help="referrals in the database (default 100,000)")
    parser.add_argument("--templates", type=int, default=2000, help="referrals submitted through the service")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per page first (default 20)")
    parser.add_argument(
        "--budget", type=float, default=90.0, help="seconds per page at most, measured by the warm-ups (0: none)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="seed once, reuse it next time: embedded, the home in DIR; production, the scratch database, vhost "
        "and keyring named in DIR/bench-seeded.json (drop them by hand after)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw figures here")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile N requests of each page that missed its goal"
    )
    parser.add_argument(
        "--only", metavar="TEXT", help="measure only the pages whose name contains TEXT (several: A|B|C)"
    )
    args = parser.parse_args()

    with ExitStack() as exits:
        profile, env, home, seeded = exits.enter_context(profile_env(args.production, args.keep))
        workdir = Path(tempfile.mkdtemp(prefix="referral-pages-logs-"))
        exits.callback(shutil.rmtree, workdir, True)
        if not seeded:
            print(cli(env, "init").strip().splitlines()[-1], flush=True)
        os.environ.update(env)
        services = bootstrap(Settings.from_env(env))
        exits.callback(services.dispose)
        db_url = env.get("REFERRAL_DATABASE_URL") or f"sqlite:///{home / 'referrals.sqlite3'}"
        engine = create_engine(db_url, connect_args={"timeout": 60} if db_url.startswith("sqlite") else {})
        exits.callback(engine.dispose)
        bench = Bench(profile, env, workdir, services, engine)
        stack = Stack(workdir, env)
        exits.callback(stack.stop)
        if seeded:
            saved = json.loads((cast(Path, args.keep) / "bench-seeded.json").read_text())
            bench.people, bench.seeding = saved["people"], saved["seeding"]
            url = start_server(bench, stack)
            drain(engine)
            print(f"reusing the seeded home {home}", flush=True)
        else:
            partners.upsert_partners(services, PartnerSchema(many=True).load(bench_partners()))
            print(f"seeding {args.total:,} referrals ({profile}) …", flush=True)
            url = seed(bench, stack, args.templates, args.total)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / "bench-seeded.json").write_text(
                    json.dumps({"people": bench.people, "seeding": bench.seeding, "env": env})
                )
        s = bench.seeding
        print(
            f"seeded: {s['through_service']:,} referrals through the service layer in {s['submit_s']} s "
            f"(routed and audited by the running service in {s['routed_s']} s more), partner staff's moves "
            f"{s['lifecycle']} in {s['lifecycle_s']} s; {s['copies']:,} copies (real vault, new keys and "
            f"ciphertexts) in {s['copy_s']} s; {s['total_s']} s in all",
            flush=True,
        )
        print(f"rows: {s['rows']}; referral statuses: {s['statuses']}", flush=True)
        targets = pages(bench, url)
        if args.only:
            wanted = args.only.split("|")
            targets = [(b, p) for b, p in targets if any(w in p.label for w in wanted)]
        load_before = os.getloadavg()
        print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
        results = []
        for browser, page in targets:
            results.append(measure(browser, page, args.warmup, args.requests, args.budget))
            r = results[-1]
            print(f"  {r['page']}: p95 {r['p95_ms']:.1f} ms over {r['requests']}", flush=True)
        load_after = os.getloadavg()
        print(
            f"{profile}: n sequential requests per page (at most {args.requests}, about {args.budget:.0f} s) after "
            f"{args.warmup} warm-ups (ms)",
            flush=True,
        )
        report(results)
        print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}", flush=True)
        failed = [r for r in results if not r["pass"]]
        print(f"{len(results) - len(failed)} of {len(results)} pages within their goal", flush=True)
        profiles = profile_pages(bench, results, args.profile, 25) if args.profile else {}
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "profile": profile,
                        "at": datetime.now(UTC).isoformat(),
                        "load_before": load_before,
                        "load_after": load_after,
                        "seeding": bench.seeding,
                        "results": results,
                        "profiles": profiles,
                    },
                    indent=1,
                    default=str,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
