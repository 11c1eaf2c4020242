"""CPU and SQL statements of one `POST /api/v1/referrals`, in process (Flask test client, no HTTP server, no
workers), on SQLite or a scratch PostgreSQL database. Less disturbed by a busy machine than
`bench/intake.py` (process CPU time, the best of several batches), so it shows what each intake change saves.

    .venv/bin/python bench/intake_cpu.py                 # SQLite, 6 batches of 100 intakes
    .venv/bin/python bench/intake_cpu.py --postgres
    .venv/bin/python bench/intake_cpu.py --postgres --profile 40   # + cProfile (CPU time), top 40 by cumulative
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from referral_service.app import create_app  # noqa: E402
from referral_service.bootstrap import bootstrap, prepare_database  # noqa: E402
from referral_service.config import Settings  # noqa: E402
from referral_service.crypto.keyring import create_keyring  # noqa: E402
from referral_service.services import users  # noqa: E402
from tests.factories import referral_body  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def database_backends(services: Any) -> set[int]:
    """The server processes connected to this benchmark's scratch database (its pool's connections)."""
    with services.engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).all()
    return {int(r[0]) for r in rows}


def cpu_seconds(pids: set[int]) -> float:
    """CPU time (user + system) used so far by these processes, from /proc (the server runs on this host)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database, dropped after")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--per-batch", type=int, default=100)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile one batch, print top N")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="referral-intake-cpu-"))
    create_keyring(home / "keyring.json")
    env = {"REFERRAL_HOME": str(home), "REFERRAL_KEYRING": str(home / "keyring.json")}
    admin, name = None, f"referral_intake_cpu_{uuid.uuid4().hex[:8]}"
    if args.postgres:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        env["REFERRAL_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        services = bootstrap(Settings.from_env(env))
        prepare_database(services)
        token = users.create_user(services, name="bench-caseworker", role="caseworker")["token"]
        client = create_app(services).test_client()
        statements: list[str] = []

        @event.listens_for(services.engine, "before_cursor_execute")
        def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement.split("\n")[0][:100])

        def post(i: int) -> None:
            body = referral_body(
                subject__cnic=f"{10000 + i // 10_000_000:05d}-{i % 10_000_000:07d}-1", subject__phone=f"+923{i:09d}"
            )
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"bench-{i}"}
            answer = client.post("/api/v1/referrals", json=body, headers=headers)
            if answer.status_code != 201:
                raise RuntimeError(f"{answer.status_code}: {answer.get_data(as_text=True)[:300]}")

        for i in range(50):  # warm-up
            post(i)
        statements.clear()
        post(99)
        print(f"{len(statements)} SQL statements per intake (and BEGIN/COMMIT):")
        for s in statements:
            print(f"  {s}")
        n, per_batch, server = 1000, [], []
        for _ in range(args.batches):
            backends = database_backends(services) if args.postgres else set()
            started, served = time.process_time(), cpu_seconds(backends)
            for i in range(n, n + args.per_batch):
                post(i)
            n += args.per_batch
            per_batch.append((time.process_time() - started) / args.per_batch * 1000)
            server.append((cpu_seconds(backends) - served) / args.per_batch * 1000)
        per_batch.sort()
        server.sort()
        print(
            f"{services.engine.dialect.name}: CPU per intake best {per_batch[0]:.2f} ms, median "
            f"{per_batch[len(per_batch) // 2]:.2f} ms ({args.batches} batches of {args.per_batch}); "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        if args.postgres:
            print(
                f"  PostgreSQL backends' CPU per intake best {server[0]:.2f} ms, median "
                f"{server[len(server) // 2]:.2f} ms (this database's backends only: the WAL writer and "
                "checkpointer, shared with every database, are left out)"
            )
        if args.profile:
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            for i in range(n, n + args.per_batch):
                post(i)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        services.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
