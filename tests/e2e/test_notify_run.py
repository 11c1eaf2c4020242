"""`referral-service run` with a partner's webhook and contact address: the real worker delivers, and a
kill -9 loses no notification. Receivers are real (HTTP with signature checks, aiosmtpd)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service_process import Service, base_env, cli, request, wait_until
from tests.factories import partner, referral_body
from tests.receivers import Mailbox, WebhookReceiver, smtp_server, webhook_receiver

CONTACT = "intake@peshawar-relief.example.org"


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, Mailbox]]:
    with webhook_receiver() as hook, smtp_server() as box:
        yield hook, box


@pytest.fixture
def prepared(tmp_path: Path, receivers: tuple[WebhookReceiver, Mailbox]) -> tuple[dict[str, str], str]:
    hook, box = receivers
    env = base_env(
        tmp_path / "home",
        REFERRAL_WEBHOOK_ALLOW_PRIVATE="1",
        REFERRAL_SMTP_URL=f"smtp://127.0.0.1:{box.port}",
    )
    cli(env, "init")
    partners_file = tmp_path / "partners.json"
    partners_file.write_text(json.dumps([partner(capacity=100, contact_email=CONTACT)]))
    cli(env, "partners", "import", str(partners_file))
    hook.secret = json.loads(cli(env, "partners", "webhook", "p-peshawar-medical", hook.url).stdout)["secret"]
    user = json.loads(cli(env, "users", "create", "--role", "caseworker", "--name", "Saima").stdout)
    return env, user["token"]


def _start(env: dict[str, str]) -> tuple[Service, str]:
    service = Service(env, "run", "--port", "0")
    port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
    return service, f"http://127.0.0.1:{port}"


def _offered_ids(hook: WebhookReceiver) -> set[str]:
    return {
        r.verified["data"]["referral_id"]
        for r in hook.received
        if r.verified is not None and r.verified["type"] == "assignment.offered"
    }


def test_run_posts_each_offer_to_the_webhook_and_mails_the_contact(
    prepared: tuple[dict[str, str], str], receivers: tuple[WebhookReceiver, Mailbox]
) -> None:
    env, token = prepared
    hook, box = receivers
    service, base = _start(env)
    try:
        status, created = request("POST", f"{base}/api/v1/referrals", token, referral_body())
        assert status == 201, created
        wait_until(lambda: _offered_ids(hook) == {created["id"]} and len(box.messages) == 1, what="offer delivered")
    finally:
        assert service.terminate(signal.SIGTERM) == 0, service.output[-2000:]
    assert [r.error for r in hook.received] == [None]
    assert box.messages[0]["To"] == CONTACT
    assert "Traceback" not in service.output


def test_a_killed_service_delivers_every_offer_after_the_restart(
    prepared: tuple[dict[str, str], str], receivers: tuple[WebhookReceiver, Mailbox]
) -> None:
    env, token = prepared
    hook, _ = receivers
    service, base = _start(env)
    ids = set()
    for i in range(5):
        body = referral_body(subject__cnic=f"17301-12345{i:02d}-1", subject__phone=f"+9230012345{i:02d}")
        status, created = request("POST", f"{base}/api/v1/referrals", token, body)
        assert status == 201, created
        ids.add(created["id"])
    service.terminate(signal.SIGKILL)

    service, base = _start(env)
    try:
        wait_until(lambda: _offered_ids(hook) == ids, timeout=40, what="every offer delivered")
    finally:
        service.terminate(signal.SIGTERM)
    assert all(r.error is None for r in hook.received)
    # At least once; a repeat carries the same webhook-id, so a receiver can drop it.
    by_referral: dict[str, set[str]] = {}
    for r in hook.received:
        if r.verified and r.verified["type"] == "assignment.offered":
            by_referral.setdefault(r.verified["data"]["referral_id"], set()).add(r.headers["webhook-id"])
    assert all(len(webhook_ids) == 1 for webhook_ids in by_referral.values())
