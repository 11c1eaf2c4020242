"""The embedded profile as an operator runs it (`referral-service run`), told a story with a marker in every
personal and free-text field (tests/leak_scenario.py); then everything it wrote is searched for the markers
in any encoding: every file of the instance folder (SQLite file and WAL, the embedded broker's messages),
its log, each webhook and e-mail it sent, and every error answer. Tokens and passwords appear in none."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.e2e.service_process import Service, base_env, cli, wait_until
from tests.factories import partner
from tests.leak_scenario import Trail, scenario_needles, tell
from tests.leaks import CANARY, find_leaks
from tests.receivers import Mailbox, WebhookReceiver, smtp_server, webhook_receiver

PARTNERS = ("p-peshawar-medical", "p-canary-relief")


def _prepare(home: Path, hook: WebhookReceiver, box: Mailbox, tmp_path: Path) -> tuple[dict[str, str], dict, list]:
    env = base_env(
        home,
        REFERRAL_WEBHOOK_ALLOW_PRIVATE="1",
        REFERRAL_SMTP_URL=f"smtp://127.0.0.1:{box.port}",
        REFERRAL_RATELIMIT_ENABLED="0",  # the careless client's many errors are not what is tested here
        REFERRAL_INSECURE_COOKIES="1",  # plain http on loopback: the web sign-in's cookies must come back
    )
    cli(env, "init")
    directory = tmp_path / "partners.json"
    directory.write_text(
        json.dumps(
            [
                partner(id=PARTNERS[0], capacity=100, contact_email="intake@peshawar-relief.example.org"),
                partner(id=PARTNERS[1], name=CANARY, capacity=100, contact_email="cases@canary.example.org"),
            ]
        )
    )
    cli(env, "partners", "import", str(directory))
    secrets = []
    for partner_id in PARTNERS:
        registered = json.loads(cli(env, "partners", "webhook", partner_id, hook.url).stdout)
        secrets.append(registered["secret"])
    hook.secret = None  # two endpoints, two secrets: signatures are tested elsewhere
    tokens = {}
    for role in ("caseworker", "supervisor", "auditor"):
        tokens[role] = json.loads(cli(env, "users", "create", "--role", role, "--name", f"{role}-1").stdout)["token"]
    staff = {
        p: json.loads(cli(env, "users", "create", "--role", "partner", "--partner", p, "--name", f"staff-{p}").stdout)[
            "token"
        ]
        for p in PARTNERS
    }
    return env, {"tokens": tokens, "staff": staff}, secrets


def _scan(what: str, blob: bytes, needles: list[str]) -> list[str]:
    return [f"{what}: {hit}" for hit in find_leaks(blob, needles)]


def scan_everything(
    *, files: bytes, logs: str, hook: WebhookReceiver, box: Mailbox, trail: Trail, secrets: list[str]
) -> list[str]:
    needles = scenario_needles()
    hits = _scan("instance folder", files, needles) + _scan("log", logs.encode(), needles)
    for r in hook.received:
        hits += _scan("webhook", json.dumps(r.headers).encode() + r.body, needles)
    for m in box.messages:
        hits += _scan("e-mail", m.as_bytes(), needles)
        hits += _scan(
            "e-mail text", "".join(str(p.get_content()) for p in m.walk() if not p.is_multipart()).encode(), needles
        )
    for what, status, body in trail.errors:
        hits += _scan(f"error answer ({what}, {status})", body, needles)
    for secret in [*trail.secrets, *secrets]:
        if secret.encode() in files or secret in logs:
            hits.append(f"a token, password or signing secret ({secret[:6]}…) is in the files or the log")
    return hits


def test_nothing_the_embedded_service_wrote_holds_a_marker_or_a_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with webhook_receiver() as hook, smtp_server() as box:
        env, users, secrets = _prepare(home, hook, box, tmp_path)
        service = Service(env, "run", "--port", "0")
        try:
            port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
            base = f"http://127.0.0.1:{port}"
            trail = tell(base, users["tokens"], users["staff"], "caseworker-1")
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
    hits = scan_everything(files=files, logs=logs, hook=hook, box=box, trail=trail, secrets=secrets)
    assert hits == [], "\n".join(hits[:40])
