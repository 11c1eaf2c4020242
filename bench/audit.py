"""The audit log at size: append, integrate, query, verify; and what auditing costs intake.

    .venv/bin/python bench/audit.py [--entries 1000000] [--database-url URL] [--intake 300] [--rounds 5]

1. Writes `--entries` sealed entries (as `AuditLog.append` does for real actions: AES-GCM record and
   details, four blind indexes, a commitment) spread over 10,000 referrals, 200 actors and 12 actions,
   committed in transactions of 2,000, and reports the append rate.
2. Integrates them all (the integrator's own step: read unsequenced entries, hash the leaves, store
   leaves and nodes, move the head, sign a checkpoint) and reports entries/s. Goal ≥ 1,500/s.
3. Queries by referral (newest 50 of one referral, decrypted as the API does) for 200 random
   referrals; reports the median and p95. Goal ≤ 20 ms.
4. Verifies the whole log from scratch (`AuditLog.verify`: every leaf recomputed from the stored
   bytes and compared, every checkpoint's signature and root, the root of the whole). Goal ≤ 5 s.
5. Intake through the HTTP API (Flask test client, `POST /api/v1/referrals`) with the audit log
   on, and with a recorder that keeps nothing, alternating `--rounds` rounds of `--intake`
   referrals in one run; reports the ratio of medians. Goal ≥ 0.9.

Default database: a fresh SQLite file in a temporary folder (the embedded profile). Give
`--database-url postgresql+psycopg://…/DB` for an existing, empty PostgreSQL database.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referral_service.audit.log import AuditEvent, AuditFilter  # noqa: E402
from referral_service.bootstrap import Services, bootstrap, prepare_database  # noqa: E402
from referral_service.config import Settings  # noqa: E402
from referral_service.crypto.keyring import create_keyring  # noqa: E402
from referral_service.services.audit import integrate_once  # noqa: E402

ACTIONS = [
    "referral.read",
    "referral.list",
    "referral.submit",
    "assignment.accept",
    "assignment.decline",
    "followup.record",
    "assignment.close",
    "partner.read",
    "deadline.overdue",
    "duplicate.list",
    "auth.sign_in",
    "subjects.incident.read",
]


class NullRecorder:
    """Auditing off: every record is dropped (the baseline intake is measured with)."""

    def record(self, **_: Any) -> None:
        return None


def _services(home: Path, url: str | None, **kwargs: Any) -> Services:
    env = {"REFERRAL_HOME": str(home)}
    if url:
        env["REFERRAL_DATABASE_URL"] = url
    settings = Settings.from_env(env)
    if not settings.keyring_path.exists():
        create_keyring(settings.keyring_path)
    return bootstrap(settings, **kwargs)


def write_entries(services: Services, n: int, rng: random.Random) -> float:
    started = time.perf_counter()
    done = 0
    while done < n:
        with services.uow() as uow:
            for _ in range(min(2000, n - done)):
                services.audit.append(
                    uow.session,
                    AuditEvent(
                        action=rng.choice(ACTIONS),
                        outcome="denied" if rng.random() < 0.03 else "allowed",
                        actor_id=f"user-{rng.randrange(200)}",
                        role="caseworker",
                        referral_id=f"ref-{rng.randrange(10_000)}",
                        request_id=os.urandom(16).hex(),
                        fields=("full_name", "phone"),
                    ),
                )
                done += 1
            uow.commit()
    return time.perf_counter() - started


def integrate(services: Services) -> tuple[float, int]:
    started, total = time.perf_counter(), 0
    while n := integrate_once(services, batch=5000):
        total += n
    return time.perf_counter() - started, total


def query(services: Services, rng: random.Random, times: int = 200) -> list[float]:
    took = []
    for _ in range(times):
        referral = f"ref-{rng.randrange(10_000)}"
        t = time.perf_counter()
        with services.uow() as uow:
            rows = services.audit.query(uow.session, AuditFilter(referral_id=referral), limit=50)
            opened = [services.audit.open_entry(uow.session, r) for r in rows]
        took.append(time.perf_counter() - t)
        assert all(e.record and e.record["referral_id"] == referral for e in opened)
    return took


def verify(services: Services) -> tuple[float, Any]:
    started = time.perf_counter()
    with services.uow() as uow:
        report = services.audit.verify(uow.session)
    return time.perf_counter() - started, report


def intake(home: Path, url: str | None, per_round: int, rounds: int) -> tuple[list[float], ...]:
    from referral_service.app import create_app
    from referral_service.services import partners, users
    from schemas import PartnerSchema
    from tests.factories import partner, referral_body

    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    apps = {}
    for mode, recorder in (("on", None), ("off", NullRecorder())):
        svc = _services(home, url, access=recorder) if recorder else _services(home, url)
        apps[mode] = svc, create_app(svc, {"TESTING": True}).test_client()
    svc = apps["on"][0]
    partners.upsert_partners(svc, [PartnerSchema().load(partner())])
    token = users.create_user(svc, name=f"bench-cw-{os.getpid()}-{time.time_ns()}", role="caseworker")["token"]
    headers = {"Authorization": f"Bearer {token}"}
    serial = iter(range(10**6))

    def body() -> dict[str, Any]:
        # A new person each time (a repeated CNIC would make every intake a duplicate check hit).
        n = next(serial)
        return referral_body(subject__cnic=f"35202-{n:07d}-1", subject__phone=f"+92300{n:07d}")

    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):  # alternate who goes first: drift cancels
            client = apps[mode][1]
            t, c = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                response = client.post("/api/v1/referrals", json=body(), headers=headers)
                assert response.status_code == 201, response.get_data(as_text=True)
            rates[mode].append(per_round / (time.perf_counter() - t))
            cpu[mode].append((time.process_time() - c) / per_round * 1000)
    for svc, _client in apps.values():
        svc.dispose()
    return rates["on"], rates["off"], cpu["on"], cpu["off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--intake", type=int, default=300, help="referrals per intake round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    services = _services(home, args.database_url)
    prepare_database(services)
    dialect = services.engine.dialect.name
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, {dialect}")

    took = write_entries(services, args.entries, rng)
    print(f"append:    {args.entries:,} entries in {took:.1f} s = {args.entries / took:,.0f} entries/s")
    took, total = integrate(services)
    print(f"integrate: {total:,} entries in {took:.1f} s = {total / took:,.0f} entries/s (goal >= 1,500)")
    q = sorted(query(services, rng))
    p50, p95 = statistics.median(q) * 1000, q[int(len(q) * 0.95)] * 1000
    print(f"query by referral (newest 50, decrypted): median {p50:.1f} ms, p95 {p95:.1f} ms (goal <= 20 ms)")
    took, report = verify(services)
    assert report.ok, report.line()
    print(f"verify:    {report.entries:,} entries in {took:.2f} s (goal <= 5 s): {report.line()}")
    services.dispose()
    if args.intake:
        on, off, cpu_on, cpu_off = intake(home, args.database_url, args.intake, args.rounds)
        ratio = statistics.median(on) / statistics.median(off)
        print(
            f"intake:    audit on median {statistics.median(on):.0f}/s, off {statistics.median(off):.0f}/s "
            f"= {ratio:.2f}x (goal >= 0.9); rounds on {[round(r) for r in on]}, off {[round(r) for r in off]}"
        )
        cpu_ratio = statistics.median(cpu_off) / statistics.median(cpu_on)
        print(
            f"intake CPU per referral: audit on {statistics.median(cpu_on):.2f} ms, off "
            f"{statistics.median(cpu_off):.2f} ms = {cpu_ratio:.2f}x the throughput CPU allows"
        )


if __name__ == "__main__":
    main()
