"""The production profile end to end: `serve` (gunicorn) and `worker` processes on PostgreSQL + RabbitMQ."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from referral_service.messaging.topology import partner_queue
from tests.e2e.service_process import Service, base_env, cli, request, wait_until
from tests.factories import partner, referral_body
from tests.servers import AMQP_URL, require_rabbitmq, scratch_database

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def production_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require_rabbitmq()
    with scratch_database() as url:
        env = base_env(
            tmp_path / "home",
            REFERRAL_DATABASE_URL=url,
            REFERRAL_BROKER_URL=AMQP_URL,
            REFERRAL_KEYRING=str(tmp_path / "keyring.json"),
            REFERRAL_INSECURE_COOKIES="1",
        )
        yield env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_and_workers_route_a_referral_into_the_partner_queue(
    production_env: dict[str, str], tmp_path: Path
) -> None:
    env = production_env
    # Production keyrings are created on purpose, never implicitly by init.
    assert "keyring" in cli(env, "init", check=False).stderr
    cli(env, "keys", "init")
    cli(env, "init")
    partner_id = f"p-e2e-{tmp_path.name[-8:].lower().replace('_', '-')}"
    partners_file = tmp_path / "partners.json"
    partners_file.write_text(json.dumps([partner(id=partner_id)]))
    cli(env, "partners", "import", str(partners_file))
    token = json.loads(cli(env, "users", "create", "--role", "caseworker", "--name", "Farah").stdout)["token"]

    port = _free_port()
    api = Service(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
    workers = [Service(env, "worker", "relay"), Service(env, "worker", "router")]
    base = f"http://127.0.0.1:{port}"
    try:
        for w in workers:
            w.wait_for("worker .* running")
        wait_until(lambda: request("GET", f"{base}/healthz")[0] == 200 if _port_open(port) else False)
        status, ready = request("GET", f"{base}/readyz")
        assert status == 200 and ready["checks"] == {"database": "ok", "broker": "ok"}
        status, created = request("POST", f"{base}/api/v1/referrals", token, referral_body())
        assert status == 201, created

        def offered() -> list[dict[str, object]]:
            body = request("GET", f"{base}/api/v1/referrals/{created['id']}", token)[1]
            return [a for a in body["assignments"] if a["status"] == "offered"]

        offer = wait_until(offered)[0]
        assert offer["partner_id"] == partner_id
        with Connection(AMQP_URL) as conn:
            queue = partner_queue(conn, partner_id)(conn.default_channel)
            message = wait_until(lambda: queue.get(no_ack=False))
            raw = message.body.decode() if isinstance(message.body, bytes) else message.body
            body = json.loads(raw)
            message.ack()
            queue.delete()
        assert body["type"] == "assignment.offered"
        assert body["assignment_id"] == offer["id"] and body["referral_id"] == created["id"]
        assert set(body) >= {"event_id", "type", "version", "occurred_at"}
        assert "Zarmeena" not in raw and "17301" not in raw
    finally:
        codes = [w.terminate(signal.SIGTERM) for w in workers]
        api_code = api.terminate(signal.SIGTERM)
    assert codes == [0, 0], [w.output[-1500:] for w in workers]
    assert api_code == 0, api.output[-1500:]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
