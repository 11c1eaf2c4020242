"""Soak (issue 14, "bad input over time"): a steady mix of good and bad requests through the public HTTP API
of the production profile for a long time; one line a minute, with every process's RSS; then the books.

    .venv/bin/python bench/soak.py                              # 30 minutes, 10 referrals/s, 20 % bad
    .venv/bin/python bench/soak.py --minutes 3                  # a short proof that it runs
    .venv/bin/python bench/soak.py --minutes 30 --json /tmp/soak.json

The service: a scratch PostgreSQL database and RabbitMQ vhost (`bench/pipeline.py::scratch`), 2 API
processes (`serve`, gunicorn, one sync worker each) and `--replicas` each of relay, router, deadlines,
integrator and notify (`bench/chaos.py`'s processes, partners, webhook receiver and settling). The
failed-authentication rate limit stays on but is raised out of reach: every client here is 127.0.0.1,
and the bad tokens would otherwise lock the good clients out, which is the limiter's job, not this soak's.

The load, open-loop (sent on schedule whatever the answers take):
- good: `--rate` referrals per second, `POST /api/v1/referrals` with a caseworker's token and an
  Idempotency-Key each;
- bad: enough requests that they are `--bad-share` of good + bad, cycling through the kinds in BAD_KINDS
  (malformed JSON, unknown fields, wrong types, oversized bodies, absent/bad/revoked tokens, unknown ids,
  wrong roles, a used Idempotency-Key with another body, ...); each must get a 4xx, never 2xx or 5xx;
- reads: `--read-rate` per second (a caseworker's referral, their list, a status filter);
- partners: each partner's staff poll their inbox every second and accept each offer 0.5-3 s after
  they first see it.

Every minute: requests sent by class, answers by status class (socket errors apart), latency p50/p95/p99
of the good submissions and of the bad requests, submit → first offer p50/p99 (client send time to the
offer's `offered_at`, read from the database for the referrals answered so far), the load average and
the RSS of each process from /proc (for `serve`, its gunicorn worker: the process that handles requests).

At the end: totals, 5xx (must be 0), bad requests not answered 4xx (must be 0), and per process the RSS at
minute 1, the middle and the end, the least-squares slope over minutes >= 2 (MB per 10 minutes) and a
verdict. "flat" means growth over the second half under FLAT_MB. Why 5 MB: these processes sit at 80-90 MB
(BENCHMARKS.md, Intake, RSS), and allocator noise (pymalloc arenas, SQLAlchemy and psycopg caches
filling) moves them by 1-2 MB; a leak of 1 KB per referral at 10/s is 9 MB over the 15 minutes of the
default run's second half, so it fails. Warm-up belongs to the first half. After the load, once settled
(`bench/chaos.py::settle`): every referral a client was told exists is in the database, once, and nothing
else is; each has an offer or is unroutable; the outbox is empty; `audit verify` passes; no process
exited. The exit code is 1 if anything of that fails.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaos import Process, Receiver, Run, _cast, _cli, _common_env, production_processes, settle  # noqa: E402
from intake import rss_mb, tree, wait_http  # noqa: E402
from pipeline import percentile, scratch  # noqa: E402

from referral_service.app import MAX_BODY_BYTES  # noqa: E402
from referral_service.db.models import Assignment, OutboxMessage, Referral  # noqa: E402
from tests.factories import referral_body  # noqa: E402

FLAT_MB = 5.0
API = "/api/v1"


# -- HTTP ---------------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int  # 0: no answer (refused, reset, timed out)
    body: bytes
    ms: float


def send(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on its own connection (gunicorn's sync workers close after each answer anyway)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    sent_headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        sent_headers["Authorization"] = f"Bearer {token}"
    sent_headers.update(headers or {})
    started = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=sent_headers)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, data, (time.perf_counter() - started) * 1000)
    except (OSError, http.client.HTTPException):
        return Answer(0, b"", (time.perf_counter() - started) * 1000)
    finally:
        conn.close()


def status_class(status: int) -> str:
    return "err" if status == 0 else f"{status // 100}xx"


# -- the soak's state ---------------------------------------------------------------------------------
@dataclass
class Minute:
    sent: Counter[str] = field(default_factory=Counter)  # by class: good, bad, read, partner
    statuses: Counter[str] = field(default_factory=Counter)  # 2xx, 4xx, 5xx, err
    good_ms: list[float] = field(default_factory=list)
    bad_ms: list[float] = field(default_factory=list)


@dataclass
class World:
    bases: list[str]
    caseworker: str
    other_caseworker: str
    revoked: str
    staff: dict[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    minute: Minute = field(default_factory=Minute)
    answered: dict[str, str] = field(default_factory=dict)  # idempotency key -> referral id
    sent_at: dict[str, float] = field(default_factory=dict)  # referral id -> wall-clock send time
    unanswered: Counter[int] = field(default_factory=Counter)  # good submissions not answered 201, by status
    recent: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=200))  # (key, referral id)
    offered: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=200))  # (partner, assignment)
    bad_by_kind: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)  # request shapes that got a 5xx
    bad_not_4xx: list[str] = field(default_factory=list)
    bad_unexpected: Counter[str] = field(default_factory=Counter)  # "kind status": a 4xx, but not the one expected
    late: int = 0  # requests that started more than a second after their slot (the client fell behind)
    stop: threading.Event = field(default_factory=threading.Event)

    def base(self) -> str:
        return random.choice(self.bases)

    def record(self, cls: str, answer: Answer, shape: str) -> None:
        with self.lock:
            self.minute.sent[cls] += 1
            self.minute.statuses[status_class(answer.status)] += 1
            if cls == "good":
                self.minute.good_ms.append(answer.ms)
            elif cls == "bad":
                self.minute.bad_ms.append(answer.ms)
            if answer.status >= 500 and len(self.server_errors) < 50:
                self.server_errors.append(f"{shape} -> {answer.status} {answer.body[:300]!r}")


def good_body(n: int) -> dict[str, Any]:
    body = referral_body(subject__cnic=None, subject__phone=None, risk_level="high")
    body["subject"]["full_name"] = f"Soak Person {n}"
    return body


def submit_good(world: World, n: int) -> None:
    key = str(uuid.uuid4())
    sent = time.time()
    answer = send(
        world.base(),
        "POST",
        f"{API}/referrals",
        world.caseworker,
        json.dumps(good_body(n)).encode(),
        {"Idempotency-Key": key},
    )
    world.record("good", answer, "POST /referrals (valid)")
    if answer.status == 201:
        rid = json.loads(answer.body)["id"]
        with world.lock:
            world.answered[key] = rid
            world.sent_at[rid] = sent
            world.recent.append((key, rid))
    else:
        with world.lock:
            world.unanswered[answer.status] += 1


# -- bad input ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """One bad request: method, path, token, body, headers; and the answers that are right for it."""

    method: str
    path: str
    token: str | None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset({400, 422})


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _a_referral(world: World) -> tuple[str, str]:
    with world.lock:
        return random.choice(world.recent) if world.recent else ("", str(uuid.uuid4()))


def _an_offer(world: World) -> tuple[str, str]:
    with world.lock:
        return random.choice(world.offered) if world.offered else (next(iter(world.staff)), str(uuid.uuid4()))


def _wrong_types(world: World) -> Bad:
    body = good_body(0)
    body.update(needs="medical", risk_level=3)
    body["consent"]["given"] = "yes"
    body["subject"]["date_of_birth"] = "yesterday"
    return Bad("POST", f"{API}/referrals", world.caseworker, _json(body))


def _unknown_fields(world: World) -> Bad:
    body = good_body(0)
    body["favourite_colour"] = "blue"
    body["subject"]["nickname"] = "Zee"
    return Bad("POST", f"{API}/referrals", world.caseworker, _json(body))


def _missing_required(world: World) -> Bad:
    body = good_body(0)
    del body["subject"]["district"]
    body["needs"] = []
    return Bad("POST", f"{API}/referrals", world.caseworker, _json(body))


def _oversized(world: World) -> Bad:
    # Just over the app's limit: refused on Content-Length, and small enough to sit in the socket buffers,
    # so the client reads the 413 rather than a reset.
    body = good_body(0)
    body["incident"]["narrative"] = "x" * (MAX_BODY_BYTES + 1024)
    return Bad("POST", f"{API}/referrals", world.caseworker, _json(body), expect=frozenset({413}))


def _duplicate_key(world: World) -> Bad:
    key, _rid = _a_referral(world)
    if not key:  # before the first good answer: no key to reuse, and a new key with a valid body would be good
        return _wrong_types(world)
    return Bad(
        "POST", f"{API}/referrals", world.caseworker, _json(good_body(-1)), {"Idempotency-Key": key}, frozenset({409})
    )


def _accept_as_caseworker(world: World) -> Bad:
    _partner, aid = _an_offer(world)
    return Bad("POST", f"{API}/assignments/{aid}/accept", world.caseworker, expect=frozenset({403, 404}))


def _decline_bad_reason(world: World) -> Bad:
    partner_id, aid = _an_offer(world)
    body = _json({"reason": "bored", "note": 7})
    return Bad("POST", f"{API}/assignments/{aid}/decline", world.staff[partner_id], body)


def _nul_in_text(world: World) -> Bad:
    body = good_body(0)
    body["incident"]["type"] = "bomb\u0000ing"
    return Bad("POST", f"{API}/referrals", world.caseworker, _json(body), expect=frozenset({400}))


BAD_KINDS: dict[str, Callable[[World], Bad]] = {
    "malformed_json": lambda w: Bad("POST", f"{API}/referrals", w.caseworker, b'{"subject": {"full_name": "x", '),
    "not_an_object": lambda w: Bad("POST", f"{API}/referrals", w.caseworker, b'["needs", "medical"]'),
    "unknown_fields": _unknown_fields,
    "wrong_types": _wrong_types,
    "missing_required": _missing_required,
    "oversized": _oversized,
    "text_plain": lambda w: Bad(
        "POST",
        f"{API}/referrals",
        w.caseworker,
        b"full_name=x",
        {"Content-Type": "text/plain"},
        frozenset({400, 415, 422}),
    ),
    "no_token": lambda w: Bad("POST", f"{API}/referrals", None, _json(good_body(0)), expect=frozenset({401})),
    "bad_token": lambda w: Bad("GET", f"{API}/referrals", "not-a-token-" + uuid.uuid4().hex, expect=frozenset({401})),
    "revoked_token": lambda w: Bad("POST", f"{API}/referrals", w.revoked, _json(good_body(0)), expect=frozenset({401})),
    "unknown_referral": lambda w: Bad("GET", f"{API}/referrals/{uuid.uuid4()}", w.caseworker, expect=frozenset({404})),
    "garbage_id": lambda w: Bad(
        "GET", f"{API}/referrals/..%2F%00'%20or%201=1", w.caseworker, expect=frozenset({400, 404, 422})
    ),
    "unknown_assignment": lambda w: Bad(
        "POST", f"{API}/assignments/{uuid.uuid4()}/accept", w.staff[next(iter(w.staff))], expect=frozenset({404})
    ),
    "partner_submits": lambda w: Bad(
        "POST", f"{API}/referrals", w.staff[next(iter(w.staff))], _json(good_body(0)), expect=frozenset({403})
    ),
    "caseworker_inbox": lambda w: Bad("GET", f"{API}/assignments", w.caseworker, expect=frozenset({403})),
    "other_caseworker": lambda w: Bad(
        "GET", f"{API}/referrals/{_a_referral(w)[1]}", w.other_caseworker, expect=frozenset({403, 404})
    ),
    "accept_as_caseworker": _accept_as_caseworker,
    "decline_bad_reason": _decline_bad_reason,
    "duplicate_key_other_body": _duplicate_key,
    "bad_query": lambda w: Bad("GET", f"{API}/referrals?limit=-5&cursor=zzz&status=lost", w.caseworker),
    # U+0000 reached PostgreSQL as a 500 before the fix that came with this bench (ids, plaintext fields).
    "nul_in_id": lambda w: Bad("GET", f"{API}/referrals/a%00b", w.caseworker, expect=frozenset({404})),
    "nul_in_accept_id": lambda w: Bad(
        "POST", f"{API}/assignments/a%00b/accept", w.staff[next(iter(w.staff))], expect=frozenset({404})
    ),
    "nul_in_text": _nul_in_text,
    "deep_nesting": lambda w: Bad("POST", f"{API}/referrals", w.caseworker, b"[" * 50_000 + b"]" * 50_000),
    "huge_number": lambda w: Bad(
        "POST", f"{API}/referrals", w.caseworker, _json(good_body(0)).replace(b'"high"', b"9" * 5000)
    ),
    "invalid_utf8": lambda w: Bad("POST", f"{API}/referrals", w.caseworker, b'{"subject": {"full_name": "\xff\xfe"}}'),
    "wrong_method": lambda w: Bad("DELETE", f"{API}/referrals", w.caseworker, expect=frozenset({405})),
}


def submit_bad(world: World, kind: str) -> None:
    bad = BAD_KINDS[kind](world)
    answer = send(world.base(), bad.method, bad.path, bad.token, bad.body, bad.headers)
    shape = f"{kind}: {bad.method} {bad.path.split('?')[0][:60]}"
    world.record("bad", answer, shape)
    with world.lock:
        world.bad_by_kind.setdefault(kind, Counter())[answer.status] += 1
        if answer.status not in bad.expect:
            world.bad_unexpected[f"{kind} {answer.status}"] += 1
        if not 400 <= answer.status < 500 and answer.status not in bad.expect and len(world.bad_not_4xx) < 50:
            world.bad_not_4xx.append(f"{shape} -> {answer.status} {answer.body[:300]!r}")


# -- reads and partners ---------------------------------------------------------------------------------
READS = ("one", "list", "assigned")


def read(world: World, which: str) -> None:
    if which == "one":
        path = f"{API}/referrals/{_a_referral(world)[1]}"
    elif which == "list":
        path = f"{API}/referrals?limit=20"
    else:
        path = f"{API}/referrals?status=assigned&limit=50"
    answer = send(world.base(), "GET", path, world.caseworker)
    world.record("read", answer, f"GET {path.split('?')[0][:60]} (read)")


def partners_accept(world: World) -> None:
    """Partner staff: look at the inbox every second; accept each offer 0.5-3 s after first seeing it."""
    due: dict[str, tuple[float, str]] = {}
    while not world.stop.wait(1.0):
        now = time.monotonic()
        for partner_id, token in world.staff.items():
            answer = send(world.base(), "GET", f"{API}/assignments?status=offered&limit=100", token)
            world.record("partner", answer, "GET /assignments (inbox)")
            if answer.status != 200:
                continue
            for item in json.loads(answer.body)["items"]:
                if item["id"] not in due:
                    due[item["id"]] = (now + random.uniform(0.5, 3.0), partner_id)
                    with world.lock:
                        world.offered.append((partner_id, item["id"]))
        for aid, (when, partner_id) in list(due.items()):
            if when <= now:
                answer = send(world.base(), "POST", f"{API}/assignments/{aid}/accept", world.staff[partner_id])
                world.record("partner", answer, "POST /assignments/{id}/accept")
                # Accepted, or gone meanwhile (a 409 if it lapsed): either way it is not looked at again.
                if answer.status != 0:
                    due[aid] = (float("inf"), partner_id)
        if len(due) > 50_000:
            due = {k: v for k, v in due.items() if v[0] != float("inf")}


def drive(world: World, rate: float, bad_rate: float, read_rate: float, seconds: float) -> None:
    """Open loop: each stream's requests are started on their own schedule, on a pool of threads."""
    kinds = itertools.cycle(BAD_KINDS)
    reads = itertools.cycle(READS)
    numbers = itertools.count()
    with ThreadPoolExecutor(max_workers=64) as pool:
        streams: list[tuple[float, Callable[[], object]]] = [
            (rate, lambda: pool.submit(submit_good, world, next(numbers))),
            (bad_rate, lambda: pool.submit(submit_bad, world, next(kinds))),
            (read_rate, lambda: pool.submit(read, world, next(reads))),
        ]
        streams = [(r, fn) for r, fn in streams if r > 0]
        start = time.monotonic()
        due = [start + random.random() / r for r, _ in streams]
        while not world.stop.is_set():
            i = min(range(len(streams)), key=due.__getitem__)
            if due[i] >= start + seconds:
                break
            wait = due[i] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1.0:
                with world.lock:
                    world.late += 1
            streams[i][1]()
            due[i] += 1 / streams[i][0]


# -- measuring --------------------------------------------------------------------------------------------
def serving_pid(process: Process) -> int | None:
    """The process that answers requests: gunicorn's worker for `serve`, the process itself for a worker."""
    if process.proc is None or process.proc.poll() is not None:
        return None
    pids = tree(process.proc.pid)
    return pids[-1] if process.name.startswith("api") and len(pids) > 1 else pids[0]


def rss_of(processes: list[Process], pids: dict[str, int | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for p in processes:
        pid = serving_pid(p)
        if pids.setdefault(p.name, pid) != pid:
            pids[p.name] = None  # restarted or gone: its figures no longer follow one process
        try:
            out[p.name] = round(rss_mb(pid), 1) if pid is not None and pids[p.name] == pid else None
        except OSError:
            out[p.name] = None
    return out


def _stamp(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def offer_latencies(engine: Engine, world: World, measured: set[str]) -> list[float]:
    """Client send time → the first offer's `offered_at`, in ms, for answered referrals offered since."""
    with world.lock:
        waiting = [rid for rid in world.sent_at if rid not in measured]
    out: list[float] = []
    with engine.connect() as conn:
        for i in range(0, len(waiting), 1000):
            chunk = waiting[i : i + 1000]
            rows = conn.execute(
                select(Assignment.referral_id, func.min(Assignment.offered_at))
                .where(Assignment.referral_id.in_(chunk))
                .group_by(Assignment.referral_id)
            ).all()
            for rid, offered_at in rows:
                measured.add(rid)
                out.append((_stamp(offered_at) - world.sent_at[rid]) * 1000)
    return out


def _p(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def row_of(minute: int, m: Minute, offers: list[float], rss: dict[str, float | None]) -> dict[str, Any]:
    return {
        "minute": minute,
        "at": datetime.now(UTC).strftime("%H:%M:%S"),
        "load1": round(os.getloadavg()[0], 2),
        "sent": sum(m.sent.values()),
        "by_class": {k: m.sent.get(k, 0) for k in ("good", "bad", "read", "partner")},
        "statuses": {k: m.statuses.get(k, 0) for k in ("2xx", "4xx", "5xx", "err")},
        "good_ms": {f"p{q}": _p(m.good_ms, q) for q in (50, 95, 99)},
        "bad_ms": {f"p{q}": _p(m.bad_ms, q) for q in (50, 95, 99)},
        "offer_ms": {"n": len(offers), "p50": _p(offers, 50), "p99": _p(offers, 99)},
        "rss_mb": rss,
    }


def print_row(row: dict[str, Any]) -> None:
    c, s, g, b, o = row["by_class"], row["statuses"], row["good_ms"], row["bad_ms"], row["offer_ms"]
    rss = " ".join(f"{k}={'-' if v is None else f'{v:.1f}'}" for k, v in row["rss_mb"].items())
    print(
        f"min {row['minute']:>3} {row['at']} load {row['load1']:.1f} | sent {row['sent']} (good {c['good']}, "
        f"bad {c['bad']}, read {c['read']}, partner {c['partner']}) | 2xx {s['2xx']} 4xx {s['4xx']} "
        f"5xx {s['5xx']} err {s['err']} | good ms {g['p50']}/{g['p95']}/{g['p99']} bad ms "
        f"{b['p50']}/{b['p95']}/{b['p99']} | offer ms {o['p50']}/{o['p99']} (n {o['n']}) | RSS MB {rss}",
        flush=True,
    )


def slope_per_10min(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sxx * 10, 2) if sxx else None


def rss_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    middle = rows[(len(rows) - 1) // 2]
    for name in rows[0]["rss_mb"]:
        first, mid, end = rows[0]["rss_mb"][name], middle["rss_mb"][name], rows[-1]["rss_mb"][name]
        points = [(r["minute"], r["rss_mb"][name]) for r in rows if r["minute"] >= 2 and r["rss_mb"][name] is not None]
        growth = None if mid is None or end is None else round(end - mid, 1)
        out[name] = {
            "minute_1": first,
            f"minute_{middle['minute']}": mid,
            f"minute_{rows[-1]['minute']}": end,
            "second_half_growth": growth,
            "slope_mb_per_10min": slope_per_10min(points),
            "verdict": "flat" if growth is not None and growth < FLAT_MB else "NOT flat",
        }
    return out


# -- the run ------------------------------------------------------------------------------------------------
def books(engine: Engine, world: World, env: dict[str, str]) -> tuple[dict[str, int], str]:
    told = set(world.answered.values())
    with engine.connect() as conn:
        in_db = Counter(conn.execute(select(Referral.id)).scalars())
        unroutable = set(conn.execute(select(Referral.id).where(Referral.status == "unroutable")).scalars())
        with_offer = set(conn.execute(select(Assignment.referral_id).distinct()).scalars())
        unsent = conn.execute(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        ).scalar_one()
    verify = subprocess.run(
        [sys.executable, "-m", "referral_service", "audit", "verify"], env=env, capture_output=True, text=True
    )
    said = (verify.stdout + verify.stderr).strip()[-1000:]
    return {
        "good_not_answered_201": sum(world.unanswered.values()),
        "told_but_missing": len(told - set(in_db)),
        "in_db_but_never_told": len(set(in_db) - told),
        "present_more_than_once": sum(1 for n in in_db.values() if n > 1),
        "without_offer_nor_unroutable": len(told - with_offer - unroutable),
        "outbox_unpublished": unsent,
        "audit_verify_failed": int(verify.returncode != 0),
    }, said


def wait_started(process: Process, needle: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in process.log.read_text(errors="replace"):
        if time.monotonic() > deadline or (process.proc is not None and process.proc.poll() is not None):
            raise SystemExit(f"{process.name} did not start: {process.log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def soak(args: argparse.Namespace, tmp: Path, extra: dict[str, str]) -> int:
    receiver = Receiver()
    env = _common_env(tmp / "home", extra, accept_seconds=3600)
    env.update(REFERRAL_RATELIMIT_ENABLED="1", REFERRAL_RATELIMIT_API_AUTH_FAILURES="1000000 per minute")
    caseworker, staff = _cast(env, receiver, tmp)
    other = json.loads(_cli(env, "users", "create", "--role", "caseworker", "--name", "soak-cw2"))["token"]
    gone = json.loads(_cli(env, "users", "create", "--role", "caseworker", "--name", "soak-cw-gone"))
    _cli(env, "users", "revoke", gone["id"])
    bases, processes = production_processes(env, tmp, replicas=args.replicas)
    world = World(bases, caseworker, other, gone["token"], staff)
    engine = create_engine(env["REFERRAL_DATABASE_URL"], pool_pre_ping=True)
    bad_rate = args.rate * args.bad_share / (1 - args.bad_share)
    rows: list[dict[str, Any]] = []
    pids: dict[str, int | None] = {}
    measured: set[str] = set()
    try:
        for p in processes:
            p.start()
        for p in processes:
            if not p.name.startswith("api"):
                wait_started(p, f"worker {p.name.rsplit('-', 1)[0]} running")
        for base in world.bases:
            wait_http(base + "/healthz")
        idle = rss_of(processes, pids)
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.minutes} min at {args.rate:g} "
            f"referrals/s + {bad_rate:.2f} bad/s ({args.bad_share:.0%}) + {args.read_rate:g} reads/s; "
            f"{len(BAD_KINDS)} bad kinds; RSS MB idle: {idle}",
            flush=True,
        )
        if args.keep:
            print(f"kept afterwards: {env['REFERRAL_DATABASE_URL']} and {env['REFERRAL_BROKER_URL']}", flush=True)
        acceptor = threading.Thread(target=partners_accept, args=(world,), daemon=True)
        acceptor.start()
        driver = threading.Thread(target=drive, args=(world, args.rate, bad_rate, args.read_rate, args.minutes * 60))
        started = time.monotonic()
        driver.start()
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, started + minute * 60 - time.monotonic()))
            with world.lock:
                m, world.minute = world.minute, Minute()
            rows.append(row_of(minute, m, offer_latencies(engine, world, measured), rss_of(processes, pids)))
            print_row(rows[-1])
        driver.join()
        # Answers still in flight after the last slot, and the last offers and acceptances, settle here.
        settled = settle(engine, Run(world.bases, caseworker, staff), args.settle_seconds)
        world.stop.set()
        acceptor.join(30)
        tail = world.minute
        checks, verify_said = books(engine, world, env)
        exited = [p.name for p in processes if p.proc is None or p.proc.poll() is not None]
        exited += [name for name, pid in pids.items() if pid is None and name not in exited]
    finally:
        world.stop.set()
        for p in processes:
            p.stop()
        engine.dispose()
    return report(args, rows, tail, world, checks, verify_said, settled, exited, len(receiver.received))


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    tail: Minute,
    world: World,
    checks: dict[str, int],
    verify_said: str,
    settled: bool,
    exited: list[str],
    webhooks: int,
) -> int:
    totals: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    for r in rows:
        totals.update(r["statuses"])
        sent.update(r["by_class"])
    totals.update(tail.statuses)
    sent.update(tail.sent)
    rss = rss_summary(rows)
    not_flat = [name for name, s in rss.items() if s["verdict"] != "flat"]
    failed = [k for k, v in checks.items() if v]
    failed += ["5xx"] * bool(totals["5xx"]) + ["bad input not answered 4xx"] * bool(world.bad_not_4xx)
    failed += [f"RSS not flat: {', '.join(not_flat)}"] * bool(not_flat) + ["did not settle"] * (not settled)
    failed += [f"process exited or restarted: {', '.join(exited)}"] * bool(exited)
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "bad_share": args.bad_share,
        "sent": sum(sent.values()),
        "sent_by_class": dict(sent),
        "statuses": dict(totals),
        "5xx": totals["5xx"],
        "socket_errors": totals["err"],
        "late_starts": world.late,
        "referrals_told": len(world.answered),
        "webhooks_received": webhooks,
        "bad_by_kind": {k: dict(sorted(v.items())) for k, v in world.bad_by_kind.items()},
        "server_errors": world.server_errors,
        "bad_not_4xx": world.bad_not_4xx,
        "bad_4xx_not_the_expected_one": dict(world.bad_unexpected),
        "rss": rss,
        "flat_threshold_mb": FLAT_MB,
        "checks": checks,
        "audit_verify": verify_said,
        "settled": settled,
        "loadavg_after": os.getloadavg(),
        "failed": failed,
    }
    print("summary:", json.dumps(summary, indent=2), flush=True)
    print(
        f"total {summary['sent']} requests, 5xx {totals['5xx']}, socket errors {totals['err']}; RSS "
        + "; ".join(f"{k} {v['verdict']} ({v['second_half_growth']} MB)" for k, v in rss.items())
        + f"; {'FAILED: ' + '; '.join(failed) if failed else 'all checks passed'}",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2, default=str))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0, help="good referrals per second (default 10)")
    parser.add_argument("--bad-share", type=float, default=0.2, help="bad requests' share of good + bad (0.2)")
    parser.add_argument("--read-rate", type=float, default=1.5, help="caseworker reads per second (default 1.5)")
    parser.add_argument("--replicas", type=int, default=1, help="processes of each worker kind (default 1)")
    parser.add_argument("--settle-seconds", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and vhost (to look into)")
    parser.add_argument("--json", metavar="FILE", help="write every minute's row and the summary here")
    args = parser.parse_args(argv)
    if args.minutes < 1 or not 0 <= args.bad_share < 1:
        parser.error("--minutes must be at least 1 and --bad-share in [0, 1)")
    with tempfile.TemporaryDirectory(prefix="referral-soak-") as tmp, scratch(keep=args.keep) as extra:
        return soak(args, Path(tmp), extra)


if __name__ == "__main__":
    sys.exit(main())
