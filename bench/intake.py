"""Intake over HTTP against the bare-Flask floor, in one run (issue 13).

The floor: a bare Flask app under `gunicorn -w 2` (`bench/intake_floor.py`), one JSON POST → one SQLite
insert (WAL, `synchronous=FULL`). The service: `POST /api/v1/referrals` with a caseworker's real token, a
valid referral body with its own CNIC and phone per request and an `Idempotency-Key` per request, while the
workers run. Both are loaded by `wrk -t2 -c8` (Debian package `wrk`) with the same body, in alternating
rounds; after each service round the benchmark waits until the backlog has drained (outbox published, every
referral has its offer, the audit log integrated) and counts what it took.

Profiles:

* embedded: `referral-service run` (one process: SQLite, the in-process broker and every worker);
* production: a scratch PostgreSQL database and RabbitMQ vhost, `referral-service serve --workers 2`
  (gunicorn), and `referral-service worker relay|router|integrator|notify`, each its own process.

    .venv/bin/python bench/intake.py                                  # both profiles, 3 rounds of 10 s
    .venv/bin/python bench/intake.py --profile production --rounds 5
    .venv/bin/python bench/intake.py --profile embedded --rss 10000   # RSS after 10,000 and 20,000 referrals
    .venv/bin/python bench/intake.py --profile production --py-spy 15 # + a profiled round (not counted)

Goals: production ≥ 0.4× the floor, embedded ≥ 0.25×, 0 failed requests, the workers keep up; API and
worker RSS ≤ 150 MB after 10,000 referrals and flat over a second 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

# One source for the bench's partners, districts and servers: the pipeline bench's.
from pipeline import AMQP_HOST_URL, DISTRICTS, PG_ADMIN_URL, bench_partners  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
GOALS = {"production": 0.4, "embedded": 0.25}
RSS_GOAL_MB = 150.0
WORKERS = ("relay", "router", "integrator", "notify")

# One Lua state per wrk thread. Every request gets its own number n (base + thread * 10^6 + counter), so
# its own CNIC, phone and Idempotency-Key; statuses are counted per thread and summed in done().
WRK_SCRIPT = r"""
local token, path, base, limit = "%(token)s", "%(path)s", %(base)d, %(limit)d
local districts = {%(districts)s}
local template = '%(template)s'
local threads, next_tid = {}, 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
counter, ok, bad = 0, 0, 0
function request()
  counter = counter + 1
  local n = base + tid * 1000000 + counter
  local d = districts[(n %% 5) + 1]
  local cnic = string.format("%%05d-%%07d-1", math.floor(n / 10000000) %% 100000, n %% 10000000)
  local phone = string.format("+923%%09d", n %% 1000000000)
  local body = string.format(template, n, cnic, phone, d[1], d[2])
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = "bench-" .. n}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", path, headers, body)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n") end
  end
  if limit > 0 and ok + bad >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("BENCH-RESULT %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\n", o, b, summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""


def referral_template() -> str:
    """The referral body with Lua format slots: n (name), CNIC, phone, province, district."""
    body = {
        "subject": {
            "full_name": "Bench Person NUM",
            "date_of_birth": "1991-03-04",
            "sex": "female",
            "cnic": "CNIC",
            "phone": "PHONE",
            "address": "House 1, Street 2",
            "province": "PROVINCE",
            "district": "DISTRICT",
            "preferred_language": "ur",
        },
        "incident": {"type": "bombing", "date": "2026-01-02", "narrative": "bench narrative"},
        "needs": ["medical"],
        "risk_level": "high",
        "consent": {"given": True, "method": "verbal", "share": ["contact"]},
        "preferences": {"staff_sex": "any"},
    }
    raw = json.dumps(body, separators=(",", ":"))
    for slot, fmt in (("NUM", "%d"), ('"CNIC"', '"%s"'), ('"PHONE"', '"%s"'), ('"PROVINCE"', '"%s"')):
        raw = raw.replace(slot, fmt, 1)
    return raw.replace('"DISTRICT"', '"%s"', 1)


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_line(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not print {needle!r} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Stack:
    """The processes of one profile (or the floor), started and stopped together."""

    workdir: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            cwd=self.env.get("PYTHONPATH"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def code_env(env: dict[str, str], code: Path | None) -> dict[str, str]:
    """The environment that runs the service from another checkout (`--baseline`): its folder first on
    the import path, ahead of this worktree's editable install."""
    return env if code is None else {**env, "PYTHONPATH": str(code)}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "referral_service", *args],
        env={**os.environ, **env},
        cwd=env.get("PYTHONPATH"),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"referral-service {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


# -- /proc ---------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, parent pid, CPU seconds) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree(pid: int) -> list[int]:
    """The process and its descendants (gunicorn's master and workers)."""
    parents = {p: s[1] for p in _all_pids() if (s := _stat(p)) is not None}
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        out.extend(frontier)
    return out


def cpu_of(pids: list[int]) -> float:
    return sum(s[2] for p in pids if (s := _stat(p)) is not None)


def cpu_by_name(name: str) -> float:
    return sum(s[2] for p in _all_pids() if (s := _stat(p)) is not None and s[0] == name)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- load ----------------------------------------------------------------------------------------
@dataclass
class Load:
    ok: int
    bad: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class Wrk:
    def __init__(self, workdir: Path, threads: int, connections: int) -> None:
        self.workdir, self.threads, self.connections = workdir, threads, connections
        self.runs = 0

    def run(
        self,
        url: str,
        path: str,
        token: str,
        seconds: float,
        limit_total: int = 0,
        reached: Callable[[], bool] | None = None,
    ) -> Load:
        """`limit_total`: each thread stops sending after its share; wrk itself only ends at the end of its
        duration, so with `reached` (polled every second) it is interrupted (SIGINT: it still reports)."""
        self.runs += 1
        script = self.workdir / f"wrk-{self.runs}.lua"
        script.write_text(
            WRK_SCRIPT
            % {
                "token": token,
                "path": path,
                "base": self.runs * 10_000_000,
                "limit": -(-limit_total // self.threads) if limit_total else 0,
                "districts": ", ".join(f'{{"{p}", "{d}"}}' for p, d in DISTRICTS),
                "template": referral_template(),
            }
        )
        argv = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds:.0f}s", "--timeout", "30s"]
        proc = subprocess.Popen(
            [*argv, "-s", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if reached is not None:
            while proc.poll() is None and not reached():
                time.sleep(1.0)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH-RESULT")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed: {stdout}{stderr}")
        if stderr.strip():
            print("  wrk: " + stderr.strip().replace("\n", "\n  wrk: "), flush=True)
        ok, bad, _requests, micros, p50, p99, *errors = (int(v) for v in line.split()[1:])
        return Load(ok, bad, micros / 1e6, p50 / 1000, p99 / 1000, sum(errors))


# -- the floor -----------------------------------------------------------------------------------
@contextmanager
def floor(workdir: Path) -> Iterator[str]:
    port = free_port()
    stack = Stack(workdir, {"FLOOR_DB": str(workdir / "floor.sqlite3")})
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(BENCH_DIR)]
    stack.start("floor", [*argv, "intake_floor:app"])
    try:
        wait_http_post(f"http://127.0.0.1:{port}/floor")
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop()


def wait_http_post(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError):
            req = urllib.request.Request(  # noqa: S310 - our own loopback server
                url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(req, timeout=2):  # noqa: S310
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# -- the service ---------------------------------------------------------------------------------
@dataclass
class Service:
    profile: str
    url: str
    token: str
    engine: Engine
    api: Proc
    workers: list[Proc]

    def api_pids(self) -> list[int]:
        return tree(self.api.pid)

    def api_rss_pids(self) -> list[int]:
        """Processes that serve requests: the one process (embedded) or gunicorn's workers (not the master)."""
        pids = self.api_pids()
        return pids if self.profile == "embedded" else [p for p in pids if p != self.api.pid] or pids

    def backlog(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM referrals),"
                    " (SELECT count(*) FROM referrals r WHERE NOT EXISTS"
                    "   (SELECT 1 FROM assignments a WHERE a.referral_id = r.id AND a.status = 'offered')),"
                    " (SELECT count(*) FROM referrals WHERE status = 'unroutable'),"
                    " (SELECT count(*) FROM outbox WHERE published_at IS NULL),"
                    " (SELECT count(*) FROM audit_entries WHERE idx IS NULL)"
                )
            ).one()
        return {
            "referrals": row[0],
            "without_offer": row[1],
            "unroutable": row[2],
            "outbox": row[3],
            "audit_unsequenced": row[4],
        }

    def drain(self, timeout: float = 600.0) -> tuple[float, dict[str, int]]:
        started = time.monotonic()
        while True:
            left = self.backlog()
            if not (left["without_offer"] or left["outbox"] or left["audit_unsequenced"]):
                return time.monotonic() - started, left
            if left["unroutable"]:
                raise RuntimeError(f"{left['unroutable']} referrals were unroutable: the bench partners are missing")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the backlog did not drain in {timeout:.0f} s: {left}")
            time.sleep(0.25)


def _prepare(env: dict[str, str], workdir: Path) -> str:
    cli(env, "init")
    partners = workdir / "partners.json"
    partners.write_text(json.dumps(bench_partners()))
    imported = cli(env, "partners", "import", str(partners))
    if f"{len(DISTRICTS)} new" not in imported:
        raise RuntimeError(f"partners import: {imported}")
    created = json.loads(cli(env, "users", "create", "--role", "caseworker", "--name", f"bench-{uuid.uuid4().hex[:6]}"))
    return str(created["token"])


@contextmanager
def embedded(workdir: Path, code: Path | None = None) -> Iterator[Service]:
    home = workdir / "embedded"
    env = code_env({"REFERRAL_HOME": str(home), "REFERRAL_INSECURE_COOKIES": "1"}, code)
    for name in ("REFERRAL_DATABASE_URL", "REFERRAL_BROKER_URL", "REFERRAL_KEYRING"):
        os.environ.pop(name, None)
    token = _prepare(env, workdir)
    port = free_port()
    stack = Stack(workdir, env)
    api = stack.start("embedded-run", [sys.executable, "-m", "referral_service", "run", "--port", str(port)])
    engine = create_engine(f"sqlite:///{home / 'referrals.sqlite3'}", connect_args={"timeout": 30})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Service("embedded", f"http://127.0.0.1:{port}", token, engine, api, [])
    finally:
        stack.stop()
        engine.dispose()


@contextmanager
def production(workdir: Path, api_workers: int, api_threads: int, code: Path | None = None) -> Iterator[Service]:
    from referral_service.crypto.keyring import create_keyring

    name = f"referral_intake_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], capture_output=True, check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], capture_output=True, check=True
    )
    home = workdir / "production"
    home.mkdir()
    create_keyring(home / "keyring.json")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    env = code_env(
        {
            "REFERRAL_HOME": str(home),
            "REFERRAL_DATABASE_URL": url,
            "REFERRAL_BROKER_URL": f"{AMQP_HOST_URL}/{name}",
            "REFERRAL_KEYRING": str(home / "keyring.json"),
        },
        code,
    )
    stack = Stack(workdir, env)
    engine = create_engine(url)
    try:
        token = _prepare(env, workdir)
        port = free_port()
        api = stack.start(
            "serve",
            [sys.executable, "-m", "referral_service", "serve", "--port", str(port), "--workers", str(api_workers)]
            + (["--threads", str(api_threads)] if api_threads > 1 else []),
        )
        workers = [stack.start(w, [sys.executable, "-m", "referral_service", "worker", w]) for w in WORKERS]
        for w in workers:
            w.wait_line(f"worker {w.name} running")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Service("production", f"http://127.0.0.1:{port}", token, engine, api, workers)
    finally:
        stack.stop()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, check=False)


# -- py-spy --------------------------------------------------------------------------------------
_LINE_NO = re.compile(r":\d+\)$")


OUR_CODE = ("(referral_service/", "(schemas/", "(workers/")


def top_frames(raw: Path, n: int = 20) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's collapsed stacks: total samples, the top frames of the service's own code by inclusive
    samples (the framework's start-up chain, in every stack, would fill that list otherwise), and the top
    frames of any code by own samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";")]
        for frame in set(frames):
            if any(part in frame for part in OUR_CODE) and "cli.py" not in frame and "__main__" not in frame:
                inclusive[frame] += samples
        own[frames[-1]] += samples
    return total, inclusive.most_common(n), own.most_common(n)


def print_profile(raw: Path) -> None:
    total, inclusive, own = top_frames(raw)
    if not total:
        print("  py-spy: no samples", flush=True)
        return
    print(f"  py-spy: {total} samples of the API; the service's own frames by inclusive time:", flush=True)
    for frame, count in inclusive:
        print(f"    {100 * count / total:5.1f} %  {frame}", flush=True)
    print("  top frames by own time:", flush=True)
    for frame, count in own:
        print(f"    {100 * count / total:5.1f} %  {frame}", flush=True)


# -- rounds --------------------------------------------------------------------------------------
@dataclass
class Round:
    floor: Load
    service: Load
    drain_s: float
    cpu_ms: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.service.rate / self.floor.rate if self.floor.rate else 0.0


def service_round(svc: Service, wrk: Wrk, seconds: float, limit_total: int = 0) -> tuple[Load, float, dict[str, float]]:
    groups = {"api": svc.api_pids(), **{w.name: [w.pid] for w in svc.workers}}
    before = {k: cpu_of(v) for k, v in groups.items()}
    before["postgres"], before["rabbitmq"] = cpu_by_name("postgres"), cpu_by_name("beam.smp")
    load = wrk.run(svc.url, "/api/v1/referrals", svc.token, seconds, limit_total)
    drain_s, _left = svc.drain()
    after = {k: cpu_of(v) for k, v in groups.items()}
    after["postgres"], after["rabbitmq"] = cpu_by_name("postgres"), cpu_by_name("beam.smp")
    n = max(load.ok, 1)
    keep = ("api", *(w.name for w in svc.workers)) if svc.profile == "embedded" else tuple(before)
    cpu_ms = {k: round((after[k] - before[k]) / n * 1000, 2) for k in keep}
    return load, drain_s, cpu_ms


def run_profile(profile: str, args: argparse.Namespace, workdir: Path, floor_url: str) -> dict[str, Any]:
    wrk = Wrk(workdir, args.threads, args.connections)
    with ExitStack() as stack:
        # With --baseline, the same profile from another checkout runs beside this one, in the same rounds.
        codes = [("baseline", Path(args.baseline).resolve()), ("this", None)] if args.baseline else [("this", None)]
        services: list[tuple[str, Service]] = []
        for label, code in codes:
            sub = workdir / label
            sub.mkdir()
            context = (
                embedded(sub, code)
                if profile == "embedded"
                else production(sub, args.api_workers, args.api_threads if code is None else 1, code)
            )
            services.append((label, stack.enter_context(context)))
        for label, svc in services:
            print(
                f"[{profile}/{label}] up: API pid {svc.api.pid}; "
                f"workers {[w.name for w in svc.workers] or 'in-process'}"
            )
            # Warm-up outside the measurement: connections, caches, the first pages of every table.
            wrk.run(svc.url, "/api/v1/referrals", svc.token, 3)
            svc.drain()
        wrk.run(floor_url, "/floor", "", 3)
        rounds: dict[str, list[Round]] = {label: [] for label, _ in services}
        for r in range(args.rounds):
            # The order rotates, so a drift in the machine's load weighs on each alike.
            parts: list[str | None] = [None, *(label for label, _ in services)]
            parts = parts[r % len(parts) :] + parts[: r % len(parts)]
            done: dict[str, tuple[Load, float, dict[str, float]]] = {}
            fl: Load | None = None
            for part in parts:
                if part is None:
                    fl = wrk.run(floor_url, "/floor", "", args.duration)
                else:
                    done[part] = service_round(dict(services)[part], wrk, args.duration)
            assert fl is not None
            for label, (sv, drain_s, cpu_ms) in done.items():
                rounds[label].append(Round(fl, sv, drain_s, cpu_ms))
                print(
                    f"[{profile}/{label}] round {r + 1}: floor {fl.rate:.0f}/s (p99 {fl.p99_ms:.1f} ms, {fl.bad} "
                    f"non-2xx), service {sv.rate:.1f}/s (p50 {sv.p50_ms:.1f} ms, p99 {sv.p99_ms:.1f} ms, {sv.bad} "
                    f"non-2xx, {sv.socket_errors} socket errors), drained {drain_s:.1f} s after; ratio "
                    f"{rounds[label][-1].ratio:.3f}; CPU ms/referral {cpu_ms}; load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        result: dict[str, Any] = {"profile": profile}
        for label, svc in services:
            result[label] = summarise(profile, label, svc, rounds[label])
        this = dict(services)["this"]
        if args.py_spy:
            result["py_spy"] = str(profile_round(this, wrk, workdir, args.py_spy, args.keep_profile))
        if args.rss:
            result["rss"] = rss_rounds(this, wrk, args.rss)
        return result


def summarise(profile: str, label: str, svc: Service, rounds: list[Round]) -> dict[str, Any]:
    left = svc.backlog()
    result: dict[str, Any] = {
        "rounds": [
            {
                "floor_per_s": x.floor.rate,
                "service_per_s": x.service.rate,
                "ratio": x.ratio,
                "service_p50_ms": x.service.p50_ms,
                "service_p99_ms": x.service.p99_ms,
                "drain_s": x.drain_s,
                "cpu_ms_per_referral": x.cpu_ms,
            }
            for x in rounds
        ],
        "failed": sum(x.service.bad + x.service.socket_errors + x.floor.bad for x in rounds),
        "backlog_after": left,
    }
    ratio = statistics.median(x.ratio for x in rounds)
    sustained = statistics.median(
        x.service.ok / (x.service.seconds + x.drain_s) / x.floor.rate for x in rounds if x.floor.rate
    )
    result["ratio_median"], result["sustained_ratio_median"] = ratio, sustained
    goal = GOALS[profile]
    print(
        f"[{profile}/{label}] median ratio to the floor {ratio:.3f}× "
        f"(goal ≥ {goal}×: {'met' if ratio >= goal else 'NOT met'});"
        f" counting the drain after each round {sustained:.3f}×; floor median "
        f"{statistics.median(x.floor.rate for x in rounds):.0f}/s, service median "
        f"{statistics.median(x.service.rate for x in rounds):.1f}/s; failed requests {result['failed']}; "
        f"after the run {left['referrals']} referrals, {left['without_offer']} without an offer, "
        f"{left['outbox']} outbox rows unpublished, {left['audit_unsequenced']} audit entries unsequenced",
        flush=True,
    )
    return result


def profile_round(svc: Service, wrk: Wrk, workdir: Path, seconds: float, keep: str | None) -> Path:
    out = Path(keep or workdir) / f"py-spy-{svc.profile}.txt"
    argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "-r", "100", "-d", f"{seconds:.0f}"]
    argv += ["-o", str(out), "--pid", str(svc.api.pid)]
    if svc.profile == "production":
        argv.append("--subprocesses")
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spy = subprocess.Popen([spy_bin, *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    load = wrk.run(svc.url, "/api/v1/referrals", svc.token, seconds - 1)
    spy.wait(60)
    svc.drain()
    print(f"[{svc.profile}] profiled round (not counted): {load.rate:.1f}/s, written to {out}", flush=True)
    print_profile(out)
    return out


def rss_rounds(svc: Service, wrk: Wrk, per_step: int) -> dict[str, Any]:
    steps = []
    for step in (1, 2):
        target = svc.backlog()["referrals"] + per_step

        def reached(target: int = target) -> bool:
            return bool(svc.backlog()["referrals"] >= target)

        load = wrk.run(svc.url, "/api/v1/referrals", svc.token, 3600, limit_total=per_step, reached=reached)
        drain_s, left = svc.drain()
        rss = {f"api[{p}]": round(rss_mb(p), 1) for p in svc.api_rss_pids()}
        rss.update({w.name: round(rss_mb(w.pid), 1) for w in svc.workers})
        steps.append({"referrals": left["referrals"], "rss_mb": rss, "failed": load.bad + load.socket_errors})
        print(
            f"[{svc.profile}] RSS after {left['referrals']} referrals (step {step}: {load.ok} posted at "
            f"{load.rate:.1f}/s, {load.bad} non-2xx, drained {drain_s:.1f} s after): {rss} MB",
            flush=True,
        )
    first, second = steps[0]["rss_mb"], steps[1]["rss_mb"]
    worst = max(second.values())
    growth = {k: round(second[k] - first[k], 1) for k in second}
    print(
        f"[{svc.profile}] RSS goal ≤ {RSS_GOAL_MB:.0f} MB each: {'met' if worst <= RSS_GOAL_MB else 'NOT met'} "
        f"(largest {worst:.1f} MB); growth over the second {per_step}: {growth} MB",
        flush=True,
    )
    return {"steps": steps, "growth_mb": growth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("embedded", "production", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="floor/service round pairs per profile (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (default 8)")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers of the production API")
    parser.add_argument("--api-threads", type=int, default=1, help="threads per gunicorn worker (serve --threads)")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also run the service from this checkout (e.g. a worktree of main)"
    )
    parser.add_argument("--rss", type=int, default=0, metavar="N", help="RSS after N and after 2N more referrals")
    parser.add_argument("--py-spy", type=float, default=0, metavar="S", help="profile the API for S s (extra round)")
    parser.add_argument("--keep-profile", metavar="DIR", help="where to keep py-spy's collapsed stacks")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("bench/intake.py needs wrk, the HTTP load generator: apt-get install wrk (Debian package 'wrk')")
        return 2
    if args.py_spy and shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        print("--py-spy needs py-spy: .venv/bin/pip install -e '.[bench]'")
        return 2
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the run; wrk -t{args.threads} "
        f"-c{args.connections}, {args.rounds} rounds of {args.duration:.0f} s per profile",
        flush=True,
    )
    profiles = ("embedded", "production") if args.profile == "both" else (args.profile,)
    results = []
    with tempfile.TemporaryDirectory(prefix="referral-intake-") as tmp:
        workdir = Path(tmp)
        with floor(workdir) as floor_url:
            for profile in profiles:
                sub = workdir / profile
                sub.mkdir()
                results.append(run_profile(profile, args, sub, floor_url))
    print(json.dumps({"results": results, "loadavg_after": os.getloadavg()}, default=str))
    ok = all(
        r[label]["failed"] == 0 and not r[label]["backlog_after"]["without_offer"]
        for r in results
        for label in ("baseline", "this")
        if label in r
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
