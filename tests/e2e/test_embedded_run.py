"""`referral-service run` as a subprocess: the thin path, clean shutdown, and nothing lost to kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.service_process import Service, base_env, cli, request, wait_until
from tests.factories import partner, referral_body

pytestmark = pytest.mark.e2e


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[dict[str, str], str]:
    env = base_env(tmp_path / "home")
    out = cli(env, "init").stdout
    assert "created a development keyring" in out
    partners_file = tmp_path / "partners.json"
    partners_file.write_text(json.dumps([partner(capacity=100)]))
    cli(env, "partners", "import", str(partners_file))
    user = json.loads(cli(env, "users", "create", "--role", "caseworker", "--name", "Saima").stdout)
    assert set(user) >= {"id", "token"}
    return env, user["token"]


def _start(env: dict[str, str]) -> tuple[Service, str]:
    service = Service(env, "run", "--port", "0")
    port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
    return service, f"http://127.0.0.1:{port}"


def _offers(base: str, token: str, referral_id: str) -> list[dict[str, object]]:
    status, body = request("GET", f"{base}/api/v1/referrals/{referral_id}", token)
    assert status == 200, body
    return [a for a in body["assignments"] if a["status"] == "offered"]


def _signed_size(env: dict[str, str]) -> int:
    with closing(sqlite3.connect(Path(env["REFERRAL_HOME"]) / "referrals.sqlite3")) as conn:
        return int(conn.execute("SELECT coalesce(max(size), 0) FROM audit_checkpoints").fetchone()[0])


def test_run_serves_routes_and_stops_cleanly_on_sigterm(prepared: tuple[dict[str, str], str]) -> None:
    env, token = prepared
    service, base = _start(env)
    try:
        assert request("GET", f"{base}/healthz") == (200, {"status": "ok"})
        status, ready = request("GET", f"{base}/readyz")
        assert status == 200 and ready["checks"] == {"database": "ok", "broker": "ok"}
        status, created = request("POST", f"{base}/api/v1/referrals", token, referral_body())
        assert status == 201, created
        offers = wait_until(lambda: _offers(base, token, created["id"]))
        assert [o["partner_id"] for o in offers] == ["p-peshawar-medical"]
        status, spec = request("GET", f"{base}/api/v1/openapi.json")
        assert status == 200 and "/api/v1/referrals" in spec["paths"]
        # The integrator runs in `run`: the submit's entry is signed into a checkpoint within seconds.
        assert wait_until(lambda: _signed_size(env) >= 1, timeout=10, what="a signed audit checkpoint")
    finally:
        code = service.terminate(signal.SIGTERM)
    assert code == 0, service.output[-2000:]
    assert "stopped" in service.output
    assert "Traceback" not in service.output
    # Nothing personal reached the process output (logs).
    for secret in ("Zarmeena", "17301", "3001234567", "Hayatabad", "Qissa"):
        assert secret not in service.output


def test_nothing_is_lost_or_doubled_when_run_is_killed(prepared: tuple[dict[str, str], str]) -> None:
    env, token = prepared
    service, base = _start(env)
    ids = []
    for i in range(15):
        body = referral_body(subject__cnic=f"17301-12345{i:02d}-1", subject__phone=f"+9230012345{i:02d}")
        status, created = request("POST", f"{base}/api/v1/referrals", token, body)
        assert status == 201, created
        ids.append(created["id"])
    service.terminate(signal.SIGKILL)

    service, base = _start(env)
    try:
        for referral_id in ids:
            offers = wait_until(lambda rid=referral_id: _offers(base, token, rid))
            assert len(offers) == 1
    finally:
        assert service.terminate() == 0
    # Every submit's audit entry survived the kill with it, and the log verifies.
    verified = cli(env, "audit", "verify")
    assert verified.returncode == 0 and "audit log intact" in verified.stdout
    cli(env, "audit", "checkpoint")  # sequences the verify's own entry too
    with closing(sqlite3.connect(Path(env["REFERRAL_HOME"]) / "referrals.sqlite3")) as conn:
        assert conn.execute("SELECT count(*) FROM audit_entries WHERE idx IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0] >= len(ids) * 2  # submit + reads


def test_bad_configuration_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, REFERRAL_BROKER_URL="redis://localhost:6379")
    result = cli(env, "run", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: REFERRAL_BROKER_URL")
    assert "Traceback" not in result.stderr


def test_run_before_init_says_what_to_do(tmp_path: Path) -> None:
    result = cli(base_env(tmp_path), "run", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "referral-service" in result.stderr and "init" in result.stderr


def test_partners_import_reads_an_open_referral_hsds_export(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    cli(env, "init")
    hsds = Path(__file__).resolve().parents[1] / "data" / "hsds_organizations.json"
    result = cli(env, "partners", "import", str(hsds), "--default-capacity", "12")
    assert "imported 1 partner(s)" in result.stdout
    assert "Boat repair" in result.stderr
    admin = json.loads(cli(env, "users", "create", "--role", "admin", "--name", "Ops").stdout)
    service, base = _start(env)
    try:
        status, listing = request("GET", f"{base}/api/v1/partners", admin["token"])
    finally:
        service.terminate()
    assert status == 200
    [imported] = listing["items"]
    assert imported["id"] == "org-1" and imported["capacity"] == 12


def test_unreachable_broker_stops_a_worker_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    cli(env, "init")
    env["REFERRAL_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1
    result = cli(env, "worker", "relay", check=False, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: REFERRAL_BROKER_URL")
