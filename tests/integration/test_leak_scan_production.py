"""The production profile as an operator runs it — the API under gunicorn and every worker as its own
process, on a scratch PostgreSQL database and RabbitMQ virtual host — told the same marked story as the
embedded one (tests/leak_scenario.py). Then everything it wrote is searched for the markers in any
encoding: a `pg_dump` of the database, every message it published to RabbitMQ (a tap queue bound to every
exchange before the first request), the instance folder, every process's log, each webhook and e-mail,
and every error answer. Tokens, passwords and signing secrets appear in none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Exchange, Queue

from referral_service.crypto.keyring import create_keyring
from referral_service.messaging.broker import connect
from referral_service.messaging.names import DEAD_EXCHANGE, EVENTS_EXCHANGE, PARTNERS_EXCHANGE, partner_routing_key
from tests.e2e.service_process import Service, cli, wait_until
from tests.integration.harness import create_vhost, delete_vhost
from tests.leak_scenario import PARTNERS, scan_everything, scenario_env, scenario_needles, set_up, tell
from tests.leaks import CANARY, find_leaks
from tests.receivers import free_port, smtp_server, webhook_receiver
from tests.servers import AMQP_URL, require_postgres, require_rabbitmq, scratch_database

pytestmark = pytest.mark.integration

WORKERS = ("relay", "router", "deadlines", "integrator", "notify")
TAP = "leak-scan-tap"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_postgres()
    require_rabbitmq()
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is not installed (Debian: postgresql-client)")
    vhost = f"referral_leak_{uuid.uuid4().hex[:10]}"
    amqp = create_vhost(AMQP_URL, vhost)
    try:
        with scratch_database("referral_leak") as url:
            home = tmp_path / "home"
            home.mkdir()
            create_keyring(home / "keyring.json")
            yield {"home": home, "database_url": url, "amqp_url": amqp}
    finally:
        delete_vhost(vhost)


def _tap(amqp_url: str) -> Queue:
    """A queue that gets a copy of everything published to the service's exchanges."""
    queue = Queue(
        TAP,
        bindings=[
            *(
                # The exchanges as the service declares them (topic, direct, direct).
                Exchange(name, type=kind, durable=True).binding(key)
                for name, kind, keys in (
                    (EVENTS_EXCHANGE, "topic", ["#"]),
                    (PARTNERS_EXCHANGE, "direct", [partner_routing_key(p) for p in PARTNERS]),
                    (DEAD_EXCHANGE, "direct", ["dead"]),
                )
                for key in keys
            )
        ],
        durable=True,
    )
    with connect(amqp_url) as conn:
        queue(conn.default_channel).declare()
    return queue


def _drain(amqp_url: str, queue: Queue) -> list[bytes]:
    got: list[bytes] = []
    with connect(amqp_url) as conn:
        bound = queue(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
            got.append(body + json.dumps(message.headers, default=str).encode())
    return got


def test_nothing_the_production_service_wrote_holds_a_marker_or_a_secret(stack: dict[str, Any], tmp_path: Path) -> None:
    home: Path = stack["home"]
    processes: list[Service] = []
    with webhook_receiver() as hook, smtp_server() as box:
        env = scenario_env(
            home,
            box,
            REFERRAL_DATABASE_URL=stack["database_url"],
            REFERRAL_BROKER_URL=stack["amqp_url"],
            REFERRAL_KEYRING=str(home / "keyring.json"),
            REFERRAL_SECRET_KEY="leak-scan-" + uuid.uuid4().hex,  # shared by the gunicorn workers
        )
        cast = set_up(env, hook, tmp_path)
        tap = _tap(stack["amqp_url"])
        port = free_port()
        try:
            for name in WORKERS:
                worker = Service(env, "worker", name)
                processes.append(worker)
                worker.wait_for(rf"worker {name} running", timeout=60)
            api = Service(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
            processes.append(api)
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _up(base), timeout=60, what="gunicorn answering")
            trail = tell(base, cast.tokens, cast.staff, "caseworker-1")
            sent = {"assignment.offered", "assignment.withdrawn"}
            wait_until(
                lambda: sent <= {json.loads(r.body)["type"] for r in hook.received} and len(box.messages) >= 2,
                timeout=60,
                what="webhooks and e-mail sent",
            )
            time.sleep(2)  # the integrator's next step: the audit tree and checkpoints are in the dump too
        finally:
            for process in reversed(processes):
                process.terminate()
        erased = cli(env, "subjects", "erase", trail.subjects["third"], "--yes")
        verified = cli(env, "audit", "verify")

    dump = subprocess.run(
        ["pg_dump", "--no-owner", stack["database_url"].replace("postgresql+psycopg://", "postgresql://")],
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ},
    ).stdout
    assert len(dump) > 100_000 and b"COPY public.audit_entries" in dump  # a real dump was read
    assert find_leaks(dump, [CANARY]), "the scan must see what is stored in the clear"
    published = _drain(stack["amqp_url"], tap)
    assert len(published) >= 10, "the tap saw the service's messages"
    broker = b"\n".join(published)
    files = b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())
    logs = "".join(p.output for p in processes) + erased.stdout + erased.stderr + verified.stdout + verified.stderr
    assert "Traceback" not in logs, logs[-3000:]

    hits = scan_everything(files=files + dump, logs=logs, hook=hook, box=box, trail=trail, secrets=cast.secrets)
    hits += [f"broker message: {hit}" for hit in find_leaks(broker, scenario_needles())]
    for secret in [*trail.secrets, *cast.secrets]:
        if secret.encode() in broker:
            hits.append(f"a token, password or signing secret ({secret[:6]}…) is in a broker message")
    assert hits == [], "\n".join(hits[:40])


def _up(base: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False
