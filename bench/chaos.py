"""Chaos: referrals driven through the whole service while its processes are killed with SIGKILL and
restarted, and (production) RabbitMQ and PostgreSQL are restarted once each; then the books are checked.

    .venv/bin/python bench/chaos.py                                  # production, 1,000 referrals
    .venv/bin/python bench/chaos.py --referrals 100 --no-server-restarts
    .venv/bin/python bench/chaos.py --embedded --referrals 300      # `referral-service run`, killed

Production: 2 API processes (`serve`, gunicorn), and 2 each of relay, router, deadlines, integrator and
notify, on a scratch PostgreSQL database and RabbitMQ vhost. Embedded: the single `run` process on a
SQLite file. Clients post referrals with an Idempotency-Key and retry with the same key on any failure;
partner staff accept what they are offered after a random delay, and offers left longer than the
accept deadline (`--accept-seconds`) lapse and go to the next partner, so deadlines fire under the
chaos too. A webhook receiver records every delivery. Every `--kill-every` seconds one process, chosen at
random, is killed with SIGKILL and started again.

Afterwards, once everything has settled, the checks (each must be 0):
- lost: a referral a client was told exists (201) that is not in the database, or one whose client
  never got an answer within the run;
- duplicated: referrals beyond one per Idempotency-Key;
- double offers: a needed service open (offered or accepted) at more than one partner, at any sample
  taken during the run or at the end; an assignment offered by more than one event; a partner offered
  the same need twice;
- double deadlines: an assignment that lapsed more than once;
- webhooks: an offer without a notification row, a row not delivered, a delivery whose id is not a
  row's (repeats of a row carry its id: receivers deduplicate);
- audit: `audit verify` failing; a referral whose submission is on record other than exactly once; an
  accepted assignment whose acceptance is not on record exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intake import wait_http  # noqa: E402
from pipeline import scratch  # noqa: E402

from referral_service.config import Settings  # noqa: E402
from referral_service.db.models import Assignment, AuditEntry, Notification, OutboxMessage, Referral  # noqa: E402
from referral_service.messaging.names import EVENTS_EXCHANGE  # noqa: E402
from tests.factories import partner, referral_body  # noqa: E402
from tests.receivers import free_port  # noqa: E402

PARTNER_IDS = [f"chaos-{i}" for i in range(4)]
PROCESS_GROUPS = ("relay", "router", "deadlines", "integrator", "notify")


# -- the service's processes ------------------------------------------------------------------------
@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "referral_service", *self.args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "referral_service", *args], env=env, capture_output=True, text=True, input=stdin
    )
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr[-2000:]}")
    return done.stdout


# -- HTTP ---------------------------------------------------------------------------------------------
def _call(base: str, method: str, path: str, token: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)  # noqa: S310 - loopback
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None
    except (OSError, ValueError):
        return 0, None  # refused, reset, timed out: the client retries


class Receiver:
    """A partner's webhook endpoint: every delivery's webhook-id and event type."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner.lock:
                    owner.received.append((self.headers.get("webhook-id", ""), json.loads(body).get("type", "")))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# -- the run ------------------------------------------------------------------------------------------
@dataclass
class Run:
    bases: list[str]
    caseworker: str
    staff: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    answered: dict[str, str] = field(default_factory=dict)  # idempotency key -> referral id
    unanswered: set[str] = field(default_factory=set)
    retries: int = 0
    accepted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def base(self) -> str:
        return random.choice(self.bases)


def submit_all(run: Run, referrals: int, rate: float, deadline: float) -> None:
    def one(i: int) -> None:
        key = str(uuid.uuid4())
        body = referral_body(subject__cnic=None, subject__phone=None, risk_level="high")
        body["subject"]["full_name"] = f"Chaos Person {i}"
        with run.lock:
            run.unanswered.add(key)
        while time.monotonic() < deadline:
            status, answer = _call(run.base(), "POST", "/api/v1/referrals", run.caseworker, body, key)
            if status in (200, 201) and answer:
                with run.lock:
                    run.answered[key] = answer["id"]
                    run.unanswered.discard(key)
                return
            with run.lock:
                run.retries += 1
            time.sleep(0.3 + random.random() * 0.7)

    threads = []
    for i in range(referrals):
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(1 / rate)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def partners_accept(run: Run, max_delay: float) -> None:
    """Each partner's staff look at their inbox and accept each offer after a random delay (some wait
    longer than the accept deadline, and lose the offer to the next partner)."""
    seen_at: dict[str, float] = {}
    delay: dict[str, float] = {}
    while not run.stop.is_set():
        for token in run.staff.values():
            status, page = _call(run.base(), "GET", "/api/v1/assignments?status=offered&limit=100", token)
            if status != 200 or not page:
                continue
            now = time.monotonic()
            for item in page["items"]:
                aid = item["id"]
                seen_at.setdefault(aid, now)
                delay.setdefault(aid, random.random() * max_delay)
                if now - seen_at[aid] >= delay[aid] and aid not in run.accepted:
                    status, _ = _call(run.base(), "POST", f"/api/v1/assignments/{aid}/accept", token)
                    if status == 200:
                        with run.lock:
                            run.accepted.add(aid)
        run.stop.wait(0.5)


def chaos(processes: list[Process], every: float, stop: threading.Event, kills: Counter[str]) -> None:
    while not stop.wait(every * (0.5 + random.random())):
        victim = random.choice(processes)
        victim.kill()
        kills[victim.name] += 1
        time.sleep(0.3)
        victim.start()


def restart_rabbitmq() -> float:
    started = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
    return time.monotonic() - started


def restart_postgresql() -> float:
    started = time.monotonic()
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - started


class Sampler(threading.Thread):
    """Looks every second for a needed service open at two partners at once."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        self.stop, self.samples = stop, 0
        self.doubles: set[tuple[str, str]] = set()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.doubles |= double_open(self.engine)
                self.samples += 1
            except Exception:  # noqa: BLE001, S112 - the database is being restarted: the next sample
                continue


def double_open(engine: Any) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Assignment.referral_id, Assignment.service)
            .where(Assignment.status.in_(("offered", "accepted")))
            .group_by(Assignment.referral_id, Assignment.service)
            .having(func.count() > 1)
        ).all()
    return {(r.referral_id, r.service) for r in rows}


def settle(engine: Any, run: Run, timeout: float) -> bool:
    """Until every referral is accepted somewhere or unroutable and nothing is left to send."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with engine.connect() as conn:
                waiting = conn.execute(
                    select(func.count()).select_from(Referral).where(Referral.status.in_(("submitted", "routing")))
                ).scalar_one()
                unsent = conn.execute(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
                ).scalar_one()
                pending = conn.execute(
                    select(func.count()).select_from(Notification).where(Notification.status == "pending")
                ).scalar_one()
                pending += conn.execute(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.notify_pending.is_(True))
                ).scalar_one()
                unsequenced = conn.execute(
                    select(func.count()).select_from(AuditEntry).where(AuditEntry.idx.is_(None))
                ).scalar_one()
            if waiting == unsent == pending == unsequenced == 0:
                return True
        except Exception:  # noqa: BLE001, S110 - the database is being restarted: look again
            pass
        time.sleep(1.0)
    return False


def check(engine: Any, run: Run, receiver: Receiver, sampler: Sampler | None, env: dict[str, str]) -> dict[str, Any]:
    with engine.connect() as conn:
        referral_ids = set(conn.execute(select(Referral.id)).scalars())
        assignments = conn.execute(
            select(Assignment.id, Assignment.referral_id, Assignment.service, Assignment.partner_id, Assignment.status)
        ).all()
        # Each event once, as published to the events exchange (partner notices go to the partner's own
        # queue as well, as a second outbox row of the same event).
        events = conn.execute(
            select(OutboxMessage.type, OutboxMessage.body).where(OutboxMessage.exchange == EVENTS_EXCHANGE)
        ).all()
        rows = conn.execute(
            select(Notification.id, Notification.status, Notification.event_type, Notification.event_id)
        ).all()
        audit = conn.execute(text("select count(*) from audit_entries")).scalar_one()
    told = set(run.answered.values())
    offered_events = Counter(b.get("assignment_id") for t, b in events if t == "assignment.offered")
    offer_event_ids = {b.get("event_id") for t, b in events if t == "assignment.offered"}
    expired_events = Counter(b.get("assignment_id") for t, b in events if t == "assignment.expired")
    per_need_partner = Counter((a.referral_id, a.service, a.partner_id) for a in assignments)
    open_now = double_open(engine)
    webhook_rows = {r.id: r for r in rows if r.event_type == "assignment.offered"}
    delivered_ids = {i for i, _ in receiver.received}
    verify = subprocess.run(
        [sys.executable, "-m", "referral_service", "audit", "verify"], env=env, capture_output=True, text=True
    )
    submissions, acceptances = _audit_counts(env)
    accepted_referrals = {a.referral_id for a in assignments if a.id in run.accepted}
    return {
        "lost": len(told - referral_ids) + len(run.unanswered),
        "duplicated": len(referral_ids) - len(told),
        "unanswered_clients": len(run.unanswered),
        "double_offers": len(open_now | (sampler.doubles if sampler else set()))
        + sum(1 for n in offered_events.values() if n > 1)
        + sum(1 for n in per_need_partner.values() if n > 1),
        "double_deadlines": sum(1 for n in expired_events.values() if n > 1),
        "offers_without_webhook_row": len(offer_event_ids - {r.event_id for r in webhook_rows.values()}),
        "webhook_rows_not_delivered": sum(1 for r in webhook_rows.values() if r.status != "delivered"),
        "deliveries_of_unknown_ids": len(delivered_ids - {r.id for r in rows}),
        "repeated_deliveries_same_id": sum(n - 1 for n in Counter(i for i, _ in receiver.received).values() if n > 1),
        "audit_verify_failed": int(verify.returncode != 0),
        "submissions_not_audited_once": sum(1 for rid in told if submissions.get(rid, 0) != 1),
        "acceptances_not_audited_once": sum(1 for rid in accepted_referrals if acceptances.get(rid, 0) != 1),
        "offers": sum(offered_events.values()),
        "lapsed": sum(expired_events.values()),
        "accepted": len(run.accepted),
        "audit_entries": audit,
        "samples": sampler.samples if sampler else 0,
    }


def _audit_counts(env: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """Allowed submissions and acceptances per referral, read from the sealed log."""
    from referral_service.audit.log import AuditFilter
    from referral_service.bootstrap import bootstrap

    services = bootstrap(Settings.from_env(env))
    submissions: Counter[str] = Counter()
    acceptances: Counter[str] = Counter()
    try:
        with services.uow() as uow:
            for action, counter in (("referral.submit", submissions), ("assignment.accept", acceptances)):
                after = None
                while True:
                    page = services.audit.query(uow.session, AuditFilter(action=action), limit=500, after=after)
                    if not page:
                        break
                    for row in page:
                        entry = services.audit.open_entry(uow.session, row)
                        record = entry.record or {}
                        if record.get("outcome") != "allowed":
                            continue
                        counter[str(record.get("referral_id"))] += 1
                    after = (page[-1].at, page[-1].id)
    finally:
        services.dispose()
    return submissions, acceptances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="new referrals per second")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills (on average)")
    parser.add_argument("--accept-seconds", type=int, default=20, help="the accept deadline of high-risk offers")
    parser.add_argument("--embedded", action="store_true", help="the embedded profile: one `run` process")
    parser.add_argument("--no-server-restarts", action="store_true", help="do not restart RabbitMQ and PostgreSQL")
    parser.add_argument("--settle-seconds", type=float, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="referral-chaos-") as tmp:
        if args.embedded:
            return _embedded(args, Path(tmp))
        with scratch(keep=False) as env_extra:
            return _production(args, Path(tmp), env_extra)


def _common_env(home: Path, extra: dict[str, str], accept_seconds: int) -> dict[str, str]:
    policy = home / "policy.json"
    home.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps({"high": {"accept": f"PT{accept_seconds}S"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env.update(extra)
    env.update(
        REFERRAL_HOME=str(home),
        REFERRAL_DEADLINE_POLICY=str(policy),
        REFERRAL_WEBHOOK_ALLOW_PRIVATE="1",
        REFERRAL_RATELIMIT_ENABLED="0",
        REFERRAL_SECRET_KEY="chaos-" + uuid.uuid4().hex,
        PYTHONUNBUFFERED="1",
    )
    return env


def _cast(env: dict[str, str], receiver: Receiver, folder: Path) -> tuple[str, dict[str, str]]:
    _cli(env, "init")
    directory = folder / "partners.json"
    directory.write_text(json.dumps([partner(id=p, name=f"Chaos {p}", capacity=100_000) for p in PARTNER_IDS]))
    _cli(env, "partners", "import", str(directory))
    for p in PARTNER_IDS:
        _cli(env, "partners", "webhook", p, receiver.url)
    caseworker = json.loads(_cli(env, "users", "create", "--role", "caseworker", "--name", "chaos-cw"))["token"]
    staff = {
        p: json.loads(_cli(env, "users", "create", "--role", "partner", "--partner", p, "--name", f"staff-{p}"))[
            "token"
        ]
        for p in PARTNER_IDS
    }
    return caseworker, staff


def _drive(
    args: Any, run: Run, processes: list[Process], restarts: list[tuple[str, float]], servers: bool
) -> Counter[str]:
    kills: Counter[str] = Counter()
    threads = [
        threading.Thread(target=partners_accept, args=(run, args.accept_seconds * 1.5), daemon=True),
        threading.Thread(target=chaos, args=(processes, args.kill_every, run.stop, kills), daemon=True),
    ]
    for t in threads:
        t.start()
    duration = args.referrals / args.rate
    deadline = time.monotonic() + duration + args.settle_seconds
    submitter = threading.Thread(target=submit_all, args=(run, args.referrals, args.rate, deadline), daemon=True)
    submitter.start()
    if servers:
        time.sleep(duration / 3)
        restarts.append(("rabbitmq", restart_rabbitmq()))
        time.sleep(duration / 3)
        restarts.append(("postgresql", restart_postgresql()))
    submitter.join()
    return kills


def production_processes(env: dict[str, str], tmp: Path, *, replicas: int) -> tuple[list[str], list[Process]]:
    """The production profile's processes, not started: 2 API processes (`serve`, one gunicorn worker
    each, on free ports) and `replicas` of each worker group; returns the API base URLs too."""
    ports = [free_port(), free_port()]
    apis = [
        Process(
            f"api-{i}",
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env,
            tmp / f"api-{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    workers = [
        Process(f"{g}-{i}", ["worker", g], env, tmp / f"{g}-{i}.log") for g in PROCESS_GROUPS for i in range(replicas)
    ]
    return [f"http://127.0.0.1:{port}" for port in ports], apis + workers


def _production(args: Any, tmp: Path, extra: dict[str, str]) -> int:
    receiver = Receiver()
    home = tmp / "home"
    env = _common_env(home, extra, args.accept_seconds)
    caseworker, staff = _cast(env, receiver, tmp)
    bases, processes = production_processes(env, tmp, replicas=2)
    for p in processes:
        p.start()
    for base in bases:
        wait_http(base + "/healthz")
    run = Run(bases, caseworker, staff)
    engine = create_engine(env["REFERRAL_DATABASE_URL"], pool_pre_ping=True)
    sampler = Sampler(env["REFERRAL_DATABASE_URL"], run.stop)
    sampler.start()
    restarts: list[tuple[str, float]] = []
    started = time.monotonic()
    try:
        kills = _drive(args, run, processes, restarts, servers=not args.no_server_restarts)
        settled = settle(engine, run, args.settle_seconds)
        run.stop.set()
        result = check(engine, run, receiver, sampler, env)
    finally:
        run.stop.set()
        for p in processes:
            p.stop()
    return _report(args, "production", result, kills, restarts, settled, started, retries=run.retries)


def _embedded(args: Any, tmp: Path) -> int:
    receiver = Receiver()
    home = tmp / "home"
    env = _common_env(home, {}, args.accept_seconds)
    caseworker, staff = _cast(env, receiver, tmp)
    port = free_port()
    process = Process("run", ["run", "--port", str(port)], env, tmp / "run.log")
    process.start()
    bases = [f"http://127.0.0.1:{port}"]
    for base in bases:
        wait_http(base + "/healthz")
    run = Run(bases, caseworker, staff)
    url = Settings.from_env(env).database_url
    engine = create_engine(url)
    sampler = Sampler(url, run.stop)
    sampler.start()
    restarts: list[tuple[str, float]] = []
    started = time.monotonic()
    try:
        kills = _drive(args, run, [process], restarts, servers=False)
        settled = settle(engine, run, args.settle_seconds)
        run.stop.set()
        result = check(engine, run, receiver, sampler, env)
    finally:
        run.stop.set()
        process.stop()
    return _report(args, "embedded", result, kills, restarts, settled, started, retries=run.retries)


def _report(
    args: Any,
    profile: str,
    result: dict[str, Any],
    kills: Counter[str],
    restarts: list[tuple[str, float]],
    settled: bool,
    started: float,
    *,
    retries: int,
) -> int:
    must_be_zero = [
        "lost",
        "duplicated",
        "double_offers",
        "double_deadlines",
        "offers_without_webhook_row",
        "webhook_rows_not_delivered",
        "deliveries_of_unknown_ids",
        "audit_verify_failed",
        "submissions_not_audited_once",
        "acceptances_not_audited_once",
    ]
    failed = [k for k in must_be_zero if result[k]] + ([] if settled else ["did not settle"])
    print(
        json.dumps(
            {
                "profile": profile,
                "referrals": args.referrals,
                "kills": sum(kills.values()),
                "kills_by_process": dict(kills),
                "restarts": {name: round(seconds, 1) for name, seconds in restarts},
                "client_retries": retries,
                "settled": settled,
                "seconds": round(time.monotonic() - started, 1),
                **result,
                "failed": failed,
            },
            indent=2,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
