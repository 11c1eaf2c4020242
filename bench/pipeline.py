"""Pipeline benchmark on the real PostgreSQL + RabbitMQ.

1. Relay throughput: outbox rows published per second by the real `OutboxRelay` (claim, publish
   with confirms, mark published), against raw kombu publish-with-confirms of the same bodies to
   the same exchange and queue, measured in the same run (alternating rounds, best of each).
2. Latency: referrals submitted through the service layer at a steady rate while
   `referral-service worker relay`, `worker router` and `worker integrator` (the audit log's) run as
   their own processes; the time from the start of each submit to the moment its offer arrives in
   the partner's queue `partner.{id}.assignments` (p50/p95/p99), and the CPU time per referral of
   each part (from `/proc`), printed next to the goals of issue 13.
3. With `--find-rate`: the highest rate whose p99 stays within the goal (bisection between
   `--min-rate` and `--max-rate`, one latency run per probe on the same scratch database).

Everything runs in a scratch database and a scratch RabbitMQ vhost, removed afterwards.

    .venv/bin/python bench/pipeline.py                  # 100 referrals/s for 25 s
    .venv/bin/python bench/pipeline.py --rate 50 --duration 10 --relay-rows 2000
    .venv/bin/python bench/pipeline.py --find-rate --duration 15 --skip-throughput
    .venv/bin/python bench/pipeline.py --rate 100 --baseline /tmp/base   # main's workers, alternating
    .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/pipeline.py --profile-router /tmp/r.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from kombu import Connection, Consumer, Producer, Queue
from sqlalchemy import create_engine, func, select, text

from referral_service.bootstrap import Services, bootstrap, prepare_database
from referral_service.config import Settings
from referral_service.crypto.keyring import create_keyring
from referral_service.db.models import OutboxMessage
from referral_service.domain.model import Actor, Role
from referral_service.messaging.broker import KombuPublisher, connect
from referral_service.messaging.names import EVENTS_EXCHANGE
from referral_service.messaging.topology import EVENTS, partner_queue
from referral_service.services import partners, users
from referral_service.services.referrals import submit_referral
from schemas import PartnerSchema, ReferralInputSchema
from workers.handlers import declare_broker
from workers.relay import OutboxRelay

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AMQP_HOST_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
# Issue 13's goals for the whole pipeline.
GOAL_CPU_MS = 8.0  # CPU per referral: submit, relay, router, integrator, PostgreSQL, RabbitMQ
GOAL_P99_MS = 250.0  # submit → offer p99 ...
GOAL_RATE = 100.0  # ... at this many referrals per second
DISTRICTS = [
    ("Khyber Pakhtunkhwa", "Peshawar"),
    ("Khyber Pakhtunkhwa", "Mardan"),
    ("Punjab", "Lahore"),
    ("Sindh", "Karachi South"),
    ("Balochistan", "Quetta"),
]


def referral_body(i: int) -> dict[str, Any]:
    province, district = DISTRICTS[i % len(DISTRICTS)]
    return {
        "subject": {
            "full_name": f"Bench Person {i}",
            "date_of_birth": "1991-03-04",
            "sex": "female",
            "address": "House 1, Street 2",
            "province": province,
            "district": district,
            "preferred_language": "ur",
        },
        "incident": {"type": "bombing", "date": "2026-01-02", "narrative": "bench narrative"},
        "needs": ["medical"],
        "risk_level": "high",
        "consent": {"given": True, "method": "verbal", "share": ["contact"]},
        "preferences": {"staff_sex": "any"},
    }


def bench_partners() -> list[dict[str, Any]]:
    return [
        {
            "id": f"bench-{district.lower().replace(' ', '-')}",
            "name": f"Bench {district}",
            "networks": ["victim_assistance"],
            "services": ["medical", "psychosocial"],
            "provinces": [province],
            "districts": [district],
            "languages": ["ur", "en"],
            "capacity": 100_000,
            "accepts_minors": True,
            "staff_sex": ["female", "male"],
            "active": True,
        }
        for province, district in DISTRICTS
    ]


@contextmanager
def scratch(keep: bool) -> Iterator[dict[str, str]]:
    """A scratch database, vhost and keyring; yields the REFERRAL_* environment."""
    name = f"referral_bench_{uuid.uuid4().hex[:8]}"
    # pool_pre_ping: bench/chaos.py restarts PostgreSQL while this database lives; the drop must still work.
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    vhost_made = subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], capture_output=True, check=False)
    if vhost_made.returncode == 0:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            capture_output=True,
            check=True,
        )
        broker_url = f"{AMQP_HOST_URL}/{name}"
    else:
        broker_url = f"{AMQP_HOST_URL}//"
    home = Path(tempfile.mkdtemp(prefix="referral-bench-"))
    create_keyring(home / "keyring.json")
    env = {
        "REFERRAL_HOME": str(home),
        "REFERRAL_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "REFERRAL_BROKER_URL": broker_url,
        "REFERRAL_KEYRING": str(home / "keyring.json"),
    }
    try:
        yield env
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if vhost_made.returncode == 0:
                subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, check=False)
            shutil.rmtree(home, ignore_errors=True)
        admin.dispose()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# -- relay throughput vs raw kombu ---------------------------------------------------------------
def sample_bodies(services: Services) -> list[dict[str, Any]]:
    """Real event bodies of the kinds the relay carries, to publish at their real sizes."""
    with services.uow() as uow:
        return [dict(b) for b in uow.session.scalars(select(OutboxMessage.body).limit(50))]


def relay_round(services: Services, conn: Connection, bodies: list[dict[str, Any]], rows: int) -> float:
    per_referral = 5
    with services.uow() as uow:
        for i in range(0, rows, per_referral):
            aggregate = str(uuid.uuid4())
            for j in range(per_referral):
                body = {**bodies[(i + j) % len(bodies)], "event_id": str(uuid.uuid4()), "referral_id": aggregate}
                uow.session.add(
                    OutboxMessage(
                        event_id=body["event_id"],
                        type="bench.relay",
                        aggregate_id=aggregate,
                        exchange=EVENTS_EXCHANGE,
                        routing_key="bench.relay",
                        body=body,
                    )
                )
        uow.commit()
    relay = OutboxRelay(services, KombuPublisher(conn))
    started = time.perf_counter()
    published = 0
    while (n := relay.publish_batch()) or published < rows:
        published += n
        if not n:
            time.sleep(0.001)
    return published / (time.perf_counter() - started)


def raw_round(conn: Connection, bodies: list[dict[str, Any]], rows: int) -> float:
    producer = Producer(conn.default_channel)
    encoded = [json.dumps({**bodies[i % len(bodies)], "event_id": str(uuid.uuid4())}) for i in range(rows)]
    started = time.perf_counter()
    for i, body in enumerate(encoded):
        producer.publish(
            body,
            exchange=EVENTS,
            routing_key="bench.raw",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=str(i),
            retry=True,
        )
    return rows / (time.perf_counter() - started)


def throughput(services: Services, broker_url: str, rows: int, rounds: int) -> dict[str, Any]:
    with connect(broker_url) as conn:
        sink = Queue(
            "bench.sink",
            exchange=EVENTS,
            routing_key="bench.#",
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        bound = sink(conn.default_channel)
        bound.declare()
        bodies = sample_bodies(services)
        relay_rates, raw_rates = [], []
        for _ in range(rounds):
            raw_rates.append(raw_round(conn, bodies, rows))
            relay_rates.append(relay_round(services, conn, bodies, rows))
            bound.purge()
        bound.delete()
    sizes = [len(json.dumps(b)) for b in bodies]
    return {
        "relay_per_s": max(relay_rates),
        "raw_per_s": max(raw_rates),
        "relay_rounds": relay_rates,
        "raw_rounds": raw_rates,
        "rows": rows,
        "body_bytes": (min(sizes), max(sizes)),
    }


# -- latency under steady load -------------------------------------------------------------------
class OfferWatcher(threading.Thread):
    def __init__(self, broker_url: str, partner_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.broker_url, self.partner_ids = broker_url, partner_ids
        self.arrived: dict[str, float] = {}
        self.stop = threading.Event()
        self.ready = threading.Event()

    def on_message(self, body: Any, message: Any) -> None:
        if body.get("type") == "assignment.offered":
            self.arrived.setdefault(body["referral_id"], time.perf_counter())
        message.ack()

    def run(self) -> None:
        with connect(self.broker_url) as conn:
            queues = [partner_queue(conn, pid) for pid in self.partner_ids]
            with Consumer(conn, queues=queues, callbacks=[self.on_message], accept=["json"], prefetch_count=500):
                self.ready.set()
                while not self.stop.is_set():
                    with suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)


def cpu_seconds(names: tuple[str, ...] = (), pids: tuple[int, ...] = ()) -> float:
    """CPU time used so far by the given processes, or by every process with one of these names."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(entry) in pids or comm in names:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids(services: Services) -> set[int]:
    """The PostgreSQL processes that work for this benchmark: the backends connected to its scratch
    database, and the shared background ones (WAL writer, checkpointer...). Other databases' backends
    (other people's tests on the same server) are left out."""
    with services.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "OR backend_type NOT IN ('client backend', 'autovacuum worker', 'parallel worker')"
            )
        ).all()
    return {int(r[0]) for r in rows}


def start_worker(env: dict[str, str], name: str, code: str | None = None) -> subprocess.Popen[str]:
    """`referral-service worker NAME`; from another checkout's code if `code` names one (a baseline)."""
    extra = {"PYTHONPATH": code} if code else {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "referral_service", "worker", name],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1", **extra},
        cwd=code,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if f"worker {name} running" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc
    raise RuntimeError(f"worker {name} did not start")


def server_autovacuum_off(services: Services) -> bool:
    with services.engine.connect() as conn:
        return conn.execute(text("SHOW autovacuum")).scalar() == "off"


class StandInAnalyze(threading.Thread):
    """What autovacuum's autoanalyze does, for a server where it is off (this machine's PostgreSQL is
    configured so): `ANALYZE` of the bench database every `every` seconds (autovacuum's default naptime
    is 60 s). Without it the planner keeps the statistics of the empty tables and scans assignments,
    referrals and subjects whole, so PostgreSQL's CPU per referral grows with the run (measured: 3.2 ->
    7.9 ms over 12,000 referrals). Its CPU is in the bench database's backends, so it is counted."""

    def __init__(self, services: Services, every: float) -> None:
        super().__init__(daemon=True)
        self.services, self.every, self.runs = services, every, 0
        self.stop = threading.Event()

    def analyze(self) -> None:
        with self.services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
        self.runs += 1

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.analyze()


def latency(
    services: Services,
    env: dict[str, str],
    partner_ids: list[str],
    rate: float,
    duration: float,
    submitters: int,
    routers: int,
    profile: str | None = None,
    code: str | None = None,
    analyze_every: float = 0.0,
) -> dict[str, Any]:
    created = users.create_user(services, name=f"bench-{uuid.uuid4().hex[:6]}", role="caseworker")
    actor = Actor(created["id"], Role.CASEWORKER, None, created["name"])
    procs = [start_worker(env, "relay", code), start_worker(env, "integrator", code)]
    procs += [start_worker(env, "router", code) for _ in range(routers)]
    watcher = OfferWatcher(env["REFERRAL_BROKER_URL"], partner_ids)
    watcher.start()
    watcher.ready.wait(10)
    analyzer = StandInAnalyze(services, analyze_every) if analyze_every > 0 else None
    if analyzer is not None:
        analyzer.analyze()  # what the probe before left, as autovacuum would have seen it
    # Warm up (connections, caches) outside the measurement.
    for i in range(20):
        submit_referral(services, ReferralInputSchema().load(referral_body(i)), actor)
    time.sleep(2)

    total = int(rate * duration)
    started_at: dict[str, float] = {}
    committed_at: dict[str, float] = {}
    late: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2

    def submitter(k: int) -> None:
        schema = ReferralInputSchema()
        for i in range(k, total, submitters):
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late.append(-wait)
            begin = time.perf_counter()
            outcome = submit_referral(services, schema.load(referral_body(i)), actor)
            end = time.perf_counter()
            with lock:
                started_at[outcome.body["id"]] = begin
                committed_at[outcome.body["id"]] = end

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(submitters)]
    groups = {
        "relay": (procs[0].pid,),
        "router": tuple(p.pid for p in procs[2:]),
        "integrator": (procs[1].pid,),
        "bench (submit)": (os.getpid(),),
    }
    before = {k: cpu_seconds(pids=v) for k, v in groups.items()}
    pg_before = {pid: cpu_seconds(pids=(pid,)) for pid in postgres_pids(services)}
    before["postgres"] = 0.0
    before["postgres (all)"], before["rabbitmq"] = cpu_seconds(("postgres",)), cpu_seconds(("beam.smp",))
    spy = None
    if profile:
        # py-spy samples the first router for the steady phase: collapsed stacks, one line per stack.
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(procs[2].pid),
                "--format",
                "raw",
                "--output",
                profile,
                "--rate",
                "200",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    if analyzer is not None:
        analyzer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    offered_rate = total / (max(started_at.values()) - t0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(r in watcher.arrived for r in started_at):
        time.sleep(0.1)
    watcher.stop.set()
    watcher.join(5)
    if analyzer is not None:
        analyzer.stop.set()
        analyzer.join(60)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    after = {k: cpu_seconds(pids=v) for k, v in groups.items()}
    # Backends that connected during the run count from their start; those that left are lost (pools keep theirs).
    after["postgres"] = sum(cpu_seconds(pids=(pid,)) - pg_before.get(pid, 0.0) for pid in postgres_pids(services))
    after["postgres (all)"], after["rabbitmq"] = cpu_seconds(("postgres",)), cpu_seconds(("beam.smp",))
    cpu_ms = {k: round((after[k] - before[k]) / total * 1000, 2) for k in before}
    # RabbitMQ is one process for every vhost: its figure includes whatever else uses the broker.
    cpu_ms["total"] = round(sum(v for k, v in cpu_ms.items() if k != "postgres (all)"), 2)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)
    missing = [r for r in started_at if r not in watcher.arrived]
    ms = [(watcher.arrived[r] - started_at[r]) * 1000 for r in started_at if r in watcher.arrived]
    after_commit = [(watcher.arrived[r] - committed_at[r]) * 1000 for r in started_at if r in watcher.arrived]
    submit_ms = [(committed_at[r] - started_at[r]) * 1000 for r in started_at]
    return {
        "submitted": total,
        "arrived": len(ms),
        "missing": len(missing),
        "rate": offered_rate,
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "mean": statistics.fmean(ms),
        "commit_p50": percentile(after_commit, 50),
        "commit_p99": percentile(after_commit, 99),
        "submit_p50": percentile(submit_ms, 50),
        "submit_p99": percentile(submit_ms, 99),
        "late_starts": sum(1 for x in late if x > 0.05),
        "cpu_ms_per_referral": cpu_ms,
        "loadavg": os.getloadavg(),
        "stand_in_analyze_runs": analyzer.runs if analyzer is not None else 0,
    }


def report_latency(lat: dict[str, Any], duration: float) -> None:
    cpu = lat["cpu_ms_per_referral"]
    p99_goal = "met" if lat["p99"] <= GOAL_P99_MS and lat["missing"] == 0 else "NOT met"
    cpu_goal = "met" if cpu["total"] <= GOAL_CPU_MS else "NOT met"
    print(
        f"latency submit→offer in partner queue at {lat['rate']:.1f}/s for {duration:.0f}s "
        f"({lat['arrived']}/{lat['submitted']} arrived, {lat['missing']} missing): "
        f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"max {lat['max']:.1f} ms",
        flush=True,
    )
    print(
        f"  of which submit (encrypt + commit) p50 {lat['submit_p50']:.1f} ms, p99 {lat['submit_p99']:.1f} "
        f"ms; commit→offer p50 {lat['commit_p50']:.1f} ms, p99 {lat['commit_p99']:.1f} ms; "
        f"{lat['late_starts']} submits started >50 ms late",
        flush=True,
    )
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "total")
    print(
        f"  CPU ms per referral: {parts}; total {cpu['total']:.2f} (goal ≤ {GOAL_CPU_MS:.0f}: {cpu_goal}) "
        f"(load average {lat['loadavg'][0]:.1f})",
        flush=True,
    )
    if abs(lat["rate"] - GOAL_RATE) < 0.05 * GOAL_RATE:
        print(
            f"  p99 {lat['p99']:.1f} ms at {lat['rate']:.0f}/s (goal ≤ {GOAL_P99_MS:.0f} ms at "
            f"{GOAL_RATE:.0f}/s): {p99_goal}",
            flush=True,
        )


def find_rate(run: Any, low: float, high: float, step: float) -> tuple[float | None, list[dict[str, Any]]]:
    """The highest rate (to `step`) whose p99 is within the goal and loses nothing: bisection."""
    probes: list[dict[str, Any]] = []

    def ok(rate: float) -> bool:
        lat = run(rate)
        probes.append(lat)
        good = bool(lat["p99"] <= GOAL_P99_MS and lat["missing"] == 0 and lat["rate"] >= 0.97 * rate)
        print(
            f"  probe {rate:.0f}/s: p99 {lat['p99']:.1f} ms, CPU total {lat['cpu_ms_per_referral']['total']:.2f} "
            f"ms/referral → {'within' if good else 'over'} the goal",
            flush=True,
        )
        return good

    if not ok(low):
        return None, probes
    best = low
    if ok(high):
        return high, probes
    while high - best > step:
        mid = round((best + high) / 2 / step) * step
        if mid in (best, high):
            break
        if ok(mid):
            best = mid
        else:
            high = mid
    return best, probes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="referrals per second (default 100)")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of steady load (default 25)")
    parser.add_argument("--submitters", type=int, default=4, help="threads submitting (default 4)")
    parser.add_argument("--routers", type=int, default=1, help="router processes (default 1)")
    parser.add_argument("--relay-rows", type=int, default=5000, help="outbox rows per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (best of; default 2)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--find-rate", action="store_true", help=f"search the highest rate with p99 ≤ {GOAL_P99_MS:.0f} ms"
    )
    parser.add_argument("--min-rate", type=float, default=40.0, help="--find-rate: lowest rate tried (default 40)")
    parser.add_argument("--max-rate", type=float, default=400.0, help="--find-rate: highest rate tried (default 400)")
    parser.add_argument("--rate-step", type=float, default=10.0, help="--find-rate: resolution (default 10/s)")
    parser.add_argument("--profile-router", metavar="FILE", help="py-spy the first router: collapsed stacks")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the workers from this checkout (e.g. `git archive` of main), alternating",
    )
    parser.add_argument("--workers-from", metavar="DIR", help="run every worker from this checkout's code")
    parser.add_argument("--compare-rounds", type=int, default=2, help="--baseline: rounds of each (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and vhost")
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=None,
        metavar="S",
        help="ANALYZE the bench database every S s while it runs, as autovacuum would "
        "(default: 60 when the server's autovacuum is off, else 0 = never)",
    )
    args = parser.parse_args()

    with scratch(args.keep) as env:
        settings = Settings.from_env(env)
        services = bootstrap(settings)
        prepare_database(services)
        loaded = partners.upsert_partners(services, PartnerSchema(many=True).load(bench_partners()))
        partner_ids = [p["id"] for p in loaded]
        with connect(env["REFERRAL_BROKER_URL"]) as conn:
            declare_broker(conn, partner_ids)
        print(f"scratch database and vhost ready ({env['REFERRAL_BROKER_URL'].rsplit('/', 1)[1]})", flush=True)
        analyze_every = args.analyze_every
        if analyze_every is None:
            analyze_every = 60.0 if server_autovacuum_off(services) else 0.0
        if analyze_every:
            print(f"ANALYZE every {analyze_every:.0f} s while it runs, as autovacuum would", flush=True)

        def run(rate: float, code: str | None = None) -> dict[str, Any]:
            return latency(
                services,
                env,
                partner_ids,
                rate,
                args.duration,
                args.submitters,
                args.routers,
                args.profile_router,
                code or args.workers_from,
                analyze_every,
            )

        result: dict[str, Any] = {}
        if args.find_rate:
            best, probes = find_rate(run, args.min_rate, args.max_rate, args.rate_step)
            result["find_rate"] = {"best": best, "probes": probes}
            for lat in probes:
                report_latency(lat, args.duration)
            print(
                f"highest rate with p99 ≤ {GOAL_P99_MS:.0f} ms and nothing missing: "
                + (f"{best:.0f}/s" if best is not None else f"below {args.min_rate:.0f}/s")
                + f" (goal: at least {GOAL_RATE:.0f}/s; searched {args.min_rate:.0f}–{args.max_rate:.0f}/s "
                f"to {args.rate_step:.0f}/s)",
                flush=True,
            )
        elif args.baseline:
            # The baseline's workers and this checkout's, alternating at the same rate in one run.
            result["compare"] = []
            for _ in range(args.compare_rounds):
                for label, code in (("baseline", args.baseline), ("this checkout", None)):
                    lat = run(args.rate, code)
                    result["compare"].append({"workers": label, **lat})
                    print(f"[{label} workers]", flush=True)
                    report_latency(lat, args.duration)
        elif not args.skip_latency:
            result["latency"] = lat = run(args.rate)
            report_latency(lat, args.duration)
        if not args.skip_throughput:
            with services.uow() as uow:
                uow.session.execute(text("UPDATE outbox SET published_at = now() WHERE published_at IS NULL"))
                uow.commit()
            result["throughput"] = tp = throughput(services, env["REFERRAL_BROKER_URL"], args.relay_rows, args.rounds)
            ratio = tp["relay_per_s"] / tp["raw_per_s"]
            print(
                f"relay {tp['relay_per_s']:.0f} rows/s vs raw kombu publish-with-confirms {tp['raw_per_s']:.0f} "
                f"msg/s ({tp['rows']} messages of {tp['body_bytes'][0]}-{tp['body_bytes'][1]} bytes, best of "
                f"{args.rounds}): ratio {ratio:.2f}",
                flush=True,
            )
            result["ratio"] = ratio
        with services.uow() as uow:
            left = uow.session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            )
        services.dispose()
        print(json.dumps({"result": result, "unpublished_left": left}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
