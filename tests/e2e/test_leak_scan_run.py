"""The embedded profile as an operator runs it (`referral-service run`), told a story with a marker in every
personal and free-text field (tests/leak_scenario.py); then everything it wrote is searched for the markers
in any encoding: every file of the instance folder (SQLite file and WAL, the embedded broker's messages),
its log, each webhook and e-mail it sent, and every error answer. Tokens and passwords appear in none."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.e2e.service_process import Service, cli, wait_until
from tests.leak_scenario import scan_everything, scenario_env, set_up, tell
from tests.leaks import CANARY, find_leaks
from tests.receivers import smtp_server, webhook_receiver


def test_nothing_the_embedded_service_wrote_holds_a_marker_or_a_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with webhook_receiver() as hook, smtp_server() as box:
        env = scenario_env(home, box)
        cast = set_up(env, hook, tmp_path)
        service = Service(env, "run", "--port", "0")
        try:
            port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
            base = f"http://127.0.0.1:{port}"
            trail = tell(base, cast.tokens, cast.staff, "caseworker-1")
            offered = {"assignment.offered", "assignment.withdrawn"}
            wait_until(
                lambda: offered <= {json.loads(r.body)["type"] for r in hook.received} and len(box.messages) >= 2,
                timeout=40,
                what="webhooks and e-mail sent",
            )
        finally:
            assert service.terminate(signal.SIGTERM) == 0, service.output[-3000:]
        erased = cli(env, "subjects", "erase", trail.subjects["third"], "--yes")
        verified = cli(env, "audit", "verify")
        assert "Traceback" not in service.output
        # Requests are logged by route, never by the path as sent (the careless client's marked path).
        assert '"GET /api/v1/referrals/<referral_id>" 404' in service.output
        assert '"GET unmatched" 404' in service.output

    files = b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())
    assert len(files) > 100_000  # a real database was read
    assert find_leaks(files, [CANARY]), "the scan must see what is stored in the clear"
    assert len(trail.errors) >= 12
    logs = service.output + erased.stdout + erased.stderr + verified.stdout + verified.stderr
    hits = scan_everything(files=files, logs=logs, hook=hook, box=box, trail=trail, secrets=cast.secrets)
    assert hits == [], "\n".join(hits[:40])
