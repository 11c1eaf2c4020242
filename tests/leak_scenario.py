"""One story told to a running service over HTTP, with a marker in every personal and free-text field,
for the whole-service leak scans (tests/e2e/test_leak_scan_run.py on the embedded profile,
tests/integration/test_leak_scan_production.py on PostgreSQL + RabbitMQ).

The story: a referral with every field marked; the same person again (the duplicate path); a partner
accepts, records a follow-up and closes the case, each with a marked note; another declines with a marked
note; consent withdrawn with a marked note; a referral withdrawn with a marked note; a supervisor reads the
duplicates queue; an auditor reads the log; a subject erased. And the careless client: marked values in
the wrong fields, in unknown fields, in broken JSON, in query strings and in paths, and a sign-in with a
marked wrong password. What the service answered to those is kept, to be scanned with everything else.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tests.e2e.service_process import base_env, cli
from tests.factories import partner, referral_body
from tests.leaks import CANARY, EXTRA_NEEDLES, MARKERS, MORE_MARKERS, find_leaks, marked_referral
from tests.receivers import Mailbox, WebhookReceiver

ERR = MORE_MARKERS["error_input"]


PARTNERS = ("p-peshawar-medical", "p-canary-relief")  # the second's name is stored in the clear: a control


def scenario_needles() -> list[str]:
    return [*MARKERS.values(), *EXTRA_NEEDLES, *MORE_MARKERS.values()]


def scenario_env(home: Path, box: Mailbox, **extra: str) -> dict[str, str]:
    return base_env(
        home,
        REFERRAL_WEBHOOK_ALLOW_PRIVATE="1",
        REFERRAL_SMTP_URL=f"smtp://127.0.0.1:{box.port}",
        REFERRAL_RATELIMIT_ENABLED="0",  # the careless client's many errors are not what is tested here
        REFERRAL_INSECURE_COOKIES="1",  # plain http on loopback: the web sign-in's cookies must come back
        **extra,
    )


@dataclass
class Cast:
    tokens: dict[str, str]  # caseworker, supervisor, auditor
    staff: dict[str, str]  # partner id -> a staff member's token
    secrets: list[str]  # the webhook signing secrets


def set_up(env: dict[str, str], hook: WebhookReceiver, folder: Path) -> Cast:
    """As an operator does: init, the partner directory with contacts and webhooks, one user per role."""
    cli(env, "init")
    directory = folder / "partners.json"
    directory.write_text(
        json.dumps(
            [
                partner(id=PARTNERS[0], capacity=100, contact_email="intake@peshawar-relief.example.org"),
                partner(id=PARTNERS[1], name=CANARY, capacity=100, contact_email="cases@canary.example.org"),
            ]
        )
    )
    cli(env, "partners", "import", str(directory))
    secrets = [json.loads(cli(env, "partners", "webhook", p, hook.url).stdout)["secret"] for p in PARTNERS]
    hook.secret = None  # two endpoints, two secrets: signatures are tested elsewhere

    def token(*args: str) -> str:
        return str(json.loads(cli(env, "users", "create", *args).stdout)["token"])

    tokens = {role: token("--role", role, "--name", f"{role}-1") for role in ("caseworker", "supervisor", "auditor")}
    staff = {p: token("--role", "partner", "--partner", p, "--name", f"staff-{p}") for p in PARTNERS}
    return Cast(tokens, staff, secrets)


def _scan(what: str, blob: bytes, needles: list[str]) -> list[str]:
    return [f"{what}: {hit}" for hit in find_leaks(blob, needles)]


def scan_everything(
    *, files: bytes, logs: str, hook: WebhookReceiver, box: Mailbox, trail: Trail, secrets: list[str]
) -> list[str]:
    """Every marker form in what the service wrote and sent, and every secret in its files and logs."""
    needles = scenario_needles()
    hits = _scan("stored files", files, needles) + _scan("log", logs.encode(), needles)
    for r in hook.received:
        hits += _scan("webhook", json.dumps(r.headers).encode() + r.body, needles)
    for m in box.messages:
        hits += _scan("e-mail", m.as_bytes(), needles)
        text = "".join(str(part.get_content()) for part in m.walk() if not part.is_multipart())
        hits += _scan("e-mail text", text.encode(), needles)
    for what, status, body in trail.errors:
        hits += _scan(f"error answer ({what}, {status})", body, needles)
    for secret in [*trail.secrets, *secrets]:
        if secret.encode() in files or secret in logs:
            hits.append(f"a token, password or signing secret ({secret[:6]}…) is in the files or the log")
    return hits


@dataclass
class Trail:
    """What the story left with the client: error answers (to scan) and secrets (never to be logged)."""

    errors: list[tuple[str, int, bytes]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    referrals: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)


def call(
    base: str, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None
) -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if method == "POST" and path == "/api/v1/referrals":
        req.add_header("Idempotency-Key", str(uuid.uuid4()))
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(status_body: tuple[int, bytes], expect: int | tuple[int, ...]) -> Any:
    status, body = status_body
    wanted = (expect,) if isinstance(expect, int) else expect
    assert status in wanted, (status, body[:500])
    return json.loads(body) if body else None


def _wait(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _assignment(base: str, token: str, referral_id: str, status: str = "offered") -> dict[str, Any] | None:
    items = _json(call(base, "GET", f"/api/v1/assignments?status={status}", token), 200)["items"]
    return next((a for a in items if a["referral_id"] == referral_id), None)


def _holder(base: str, partners: dict[str, str], referral_id: str) -> tuple[str, dict[str, Any]] | None:
    for partner_id, token in partners.items():
        found = _assignment(base, token, referral_id)
        if found:
            return partner_id, found
    return None


def _careless_client(base: str, trail: Trail, cw: str, assignment_id: str) -> None:
    """Marked values where they do not belong: every answer must be a clear 4xx that echoes none."""
    marked_name = referral_body(subject__full_name=ERR * 20)  # too long
    cases: list[tuple[str, str, str, Any, bytes | None]] = [
        ("date of birth", "POST", "/api/v1/referrals", referral_body(subject__date_of_birth=ERR), None),
        ("cnic", "POST", "/api/v1/referrals", referral_body(subject__cnic=ERR), None),
        ("phone", "POST", "/api/v1/referrals", referral_body(subject__phone=ERR), None),
        ("long name", "POST", "/api/v1/referrals", marked_name, None),
        ("unknown field", "POST", "/api/v1/referrals", {**referral_body(), ERR: ERR}, None),
        ("enum", "POST", "/api/v1/referrals", referral_body(risk_level=ERR), None),
        ("broken JSON", "POST", "/api/v1/referrals", None, b'{"subject": {"full_name": "' + ERR.encode()),
        ("query", "GET", "/api/v1/referrals?" + urlencode({"status": ERR}), None, None),
        ("path", "GET", "/api/v1/referrals/" + quote(ERR, safe=""), None, None),
        ("unknown path", "GET", "/api/v1/" + quote(ERR, safe=""), None, None),
        ("cursor", "GET", "/api/v1/referrals?" + urlencode({"cursor": ERR}), None, None),
        (
            "follow-up",
            "POST",
            f"/api/v1/assignments/{assignment_id}/followups",
            {"outcome": ERR, "note": ERR},
            None,
        ),
    ]
    for what, method, path, body, raw in cases:
        status, answer = call(base, method, path, cw, body, raw)
        assert 400 <= status < 500, (what, status, answer[:300])
        trail.errors.append((what, status, answer))


def _web_sign_in_with_a_wrong_password(base: str, trail: Trail, name: str) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/login", timeout=20).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "no CSRF token on /login"
    form = urlencode({"name": name, "password": MORE_MARKERS["password"], "csrf_token": token.group(1)}).encode()
    try:
        opener.open(urllib.request.Request(base + "/login", data=form, method="POST"), timeout=20)  # noqa: S310
        raise AssertionError("a wrong password signed in")
    except urllib.error.HTTPError as err:
        assert err.code == 422, err.code
        trail.errors.append(("sign-in", err.code, err.read()))
    trail.secrets.append(MORE_MARKERS["password"])


def tell(base: str, tokens: dict[str, str], partners: dict[str, str], caseworker_name: str) -> Trail:
    """The story, against the service at `base`. `tokens`: caseworker, supervisor, auditor;
    `partners`: a staff token per partner id."""
    trail = Trail(secrets=[*tokens.values(), *partners.values()])
    cw, sup = tokens["caseworker"], tokens["supervisor"]
    marked = marked_referral(incident__type=MORE_MARKERS["incident_type"])
    first = _json(call(base, "POST", "/api/v1/referrals", cw, marked), 201)
    # The same person again, other spellings of the same CNIC and phone: a subject of its own and a
    # possible duplicate for the supervisors.
    again = referral_body(
        subject__full_name=MARKERS["full_name"],
        subject__cnic="6110198765437",
        subject__phone="03219876543",
        incident__narrative=MARKERS["narrative"],
    )
    second = _json(call(base, "POST", "/api/v1/referrals", cw, again), 201)
    third = _json(
        call(
            base,
            "POST",
            "/api/v1/referrals",
            cw,
            referral_body(
                subject__full_name=MARKERS["full_name"],
                subject__cnic=None,
                subject__phone=None,
                subject__address=MARKERS["address"],
            ),
        ),
        201,
    )
    trail.referrals = {"first": first["id"], "second": second["id"], "third": third["id"]}
    trail.subjects = {"first": first["subject_id"], "second": second["subject_id"], "third": third["subject_id"]}

    partner_id, offer = _wait(lambda: _holder(base, partners, first["id"]), "the first offer")
    staff = partners[partner_id]
    shown = _json(call(base, "GET", f"/api/v1/referrals/{first['id']}", cw), 200)
    assert shown["subject"]["full_name"] == MARKERS["full_name"]  # the data is in there, readable to its caseworker
    _json(call(base, "POST", f"/api/v1/assignments/{offer['id']}/accept", staff), 200)
    _json(
        call(
            base,
            "POST",
            f"/api/v1/assignments/{offer['id']}/followups",
            staff,
            {"outcome": "contacted", "note": MARKERS["note"]},
        ),
        201,
    )
    _careless_client(base, trail, cw, offer["id"])
    _json(
        call(
            base,
            "POST",
            f"/api/v1/assignments/{offer['id']}/close",
            staff,
            {"outcome": "referred_elsewhere", "note": MORE_MARKERS["close_note"]},
        ),
        200,
    )

    holder_id, second_offer = _wait(lambda: _holder(base, partners, second["id"]), "the second offer")
    _json(
        call(
            base,
            "POST",
            f"/api/v1/assignments/{second_offer['id']}/decline",
            partners[holder_id],
            {"reason": "other", "note": MORE_MARKERS["decline_note"]},
        ),
        200,
    )
    _json(
        call(
            base,
            "POST",
            f"/api/v1/referrals/{second['id']}/consent/withdraw",
            cw,
            {"note": MORE_MARKERS["consent_note"]},
        ),
        200,
    )
    _json(
        call(base, "POST", f"/api/v1/referrals/{third['id']}/withdraw", cw, {"note": MORE_MARKERS["withdraw_note"]}),
        200,
    )

    queue = _json(call(base, "GET", "/api/v1/duplicates", sup), 200)["items"]
    assert [d["referral_id"] for d in queue] == [second["id"]]
    entries = _json(call(base, "GET", f"/api/v1/audit?referral_id={first['id']}", tokens["auditor"]), 200)["items"]
    assert entries, "the auditor sees the first referral's record"
    _web_sign_in_with_a_wrong_password(base, trail, caseworker_name)
    return trail
