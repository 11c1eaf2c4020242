"""Brute force: a per-account pause kept in the database, per-client rate limits, failed sign-ins recorded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from referral_service.app import create_app
from referral_service.audit.log import AuditFilter
from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import AuditEntry
from referral_service.domain.errors import Unauthenticated
from referral_service.services import users
from tests.conftest import FakeClock, embedded_settings
from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in

WRONG = "not the password at all"
GENERIC = "Wrong name or password. After repeated failures, sign-in is paused for a while"


class RecordingAccess:
    """Captures what the services report to the access recorder."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **entry: Any) -> None:
        self.records.append(entry)


@pytest.fixture
def recorder() -> RecordingAccess:
    return RecordingAccess()


@pytest.fixture
def services(home: Path, clock: FakeClock, recorder: RecordingAccess) -> Iterator[Services]:
    svc = bootstrap(embedded_settings(home), clock=clock, access=recorder)
    yield svc
    svc.dispose()


@pytest.fixture
def app(services: Services) -> Any:
    # The per-client limit is off here so the per-account pause is tested on its own; the tests of the
    # limit make their own app with it on.
    return create_app(services, {"TESTING": True, "RATELIMIT_ENABLED": False})


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


def _fail(client: FlaskClient, name: str, times: int) -> None:
    for _ in range(times):
        resp = sign_in(client, name, WRONG)
        assert resp.status_code == 422


def _signs_in(client: FlaskClient, name: str) -> bool:
    resp = sign_in(client, name)
    if resp.status_code == 302:
        client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")})
        return True
    assert resp.status_code == 422 and GENERIC in resp.get_data(as_text=True)
    return False


# -- the per-account pause -------------------------------------------------------------------------
def test_five_wrong_passwords_pause_the_account_even_for_the_right_one(
    client: FlaskClient, caseworker: Any, clock: FakeClock
) -> None:
    _fail(client, caseworker.actor.name, 5)
    assert not _signs_in(client, caseworker.actor.name)
    clock.advance(seconds=59)
    assert not _signs_in(client, caseworker.actor.name)
    clock.advance(seconds=2)
    assert _signs_in(client, caseworker.actor.name)


def test_four_wrong_passwords_do_not_pause_and_a_success_resets_the_count(
    client: FlaskClient, caseworker: Any, clock: FakeClock
) -> None:
    _fail(client, caseworker.actor.name, 4)
    assert _signs_in(client, caseworker.actor.name)
    _fail(client, caseworker.actor.name, 4)  # counting starts again from zero
    assert _signs_in(client, caseworker.actor.name)


def test_the_pause_doubles_with_every_further_failure_up_to_an_hour(
    client: FlaskClient, caseworker: Any, clock: FakeClock
) -> None:
    name = caseworker.actor.name
    _fail(client, name, 5)  # paused 1 minute
    clock.advance(minutes=1, seconds=1)
    _fail(client, name, 1)  # 6th failure: 2 minutes
    clock.advance(minutes=1, seconds=30)
    assert not _signs_in(client, name)
    clock.advance(seconds=31)
    assert _signs_in(client, name)
    _fail(client, name, 15)  # long past the cap
    clock.advance(minutes=59)
    assert not _signs_in(client, name)
    clock.advance(minutes=1, seconds=1)
    assert _signs_in(client, name)


def test_message_is_the_same_for_an_unknown_name_a_wrong_password_and_a_paused_account(
    client: FlaskClient, caseworker: Any
) -> None:
    def page(name: str, password: str) -> str:
        resp = sign_in(client, name, password)
        assert resp.status_code == 422
        html = resp.get_data(as_text=True)
        # the CSRF token and the echoed name are the only differences allowed
        html = re.sub(r'name="csrf_token" value="[^"]+"', "", html)
        return html.replace(f'value="{name}"', "")

    unknown = page("nobody-by-this-name", WRONG)
    wrong = page(caseworker.actor.name, WRONG)
    _fail(client, caseworker.actor.name, 4)
    paused_right_password = page(caseworker.actor.name, PASSWORD)
    assert GENERIC in unknown
    assert unknown == wrong == paused_right_password


def test_pause_holds_across_two_app_instances_on_one_database(
    home: Path, clock: FakeClock, caseworker: Any, client: FlaskClient
) -> None:
    # A second process (another gunicorn worker or host) sharing the database.
    other_services = bootstrap(embedded_settings(home), clock=clock)
    try:
        other = create_app(other_services, {"TESTING": True, "RATELIMIT_ENABLED": False}).test_client()
        _fail(client, caseworker.actor.name, 3)
        _fail(other, caseworker.actor.name, 2)
        assert not _signs_in(other, caseworker.actor.name)
        assert not _signs_in(client, caseworker.actor.name)
        clock.advance(minutes=2)
        assert _signs_in(other, caseworker.actor.name)
    finally:
        other_services.dispose()


def test_failed_sign_ins_are_recorded_without_the_typed_name_or_password(
    client: FlaskClient, caseworker: Any, recorder: RecordingAccess
) -> None:
    recorder.records.clear()
    sign_in(client, caseworker.actor.name, WRONG)
    sign_in(client, "someone-unknown", WRONG)
    sign_in(client, caseworker.actor.name)
    sign_ins = [r for r in recorder.records if r["action"] == "auth.sign_in"]
    assert [(r["outcome"], r["actor"]) for r in sign_ins] == [("denied", None), ("denied", None), ("allowed", None)]
    assert sign_ins[0]["details"] == {"user_id": caseworker.actor.user_id, "reason": "wrong_password"}
    assert sign_ins[1]["details"] == {"reason": "unknown_name"}
    assert all(r["referral_id"] is None for r in sign_ins)
    text = repr(recorder.records)
    for typed in (WRONG, PASSWORD, "someone-unknown", caseworker.actor.name):
        assert typed not in text


def test_failed_sign_in_is_in_the_audit_log_without_the_typed_text(
    client: FlaskClient, caseworker: Any, home: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    services = bootstrap(embedded_settings(home), clock=clock)  # the real recorder: the audit log
    try:
        with caplog.at_level("DEBUG"), pytest.raises(Unauthenticated):
            users.sign_in(services, caseworker.actor.name, WRONG)
        with services.uow() as uow:
            [entry] = [
                services.audit.open_entry(uow.session, row)
                for row in services.audit.query(uow.session, AuditFilter(action="auth.sign_in"), limit=10)
            ]
            sealed = b"".join(row.record_ct + row.details_ct for row in uow.session.scalars(select(AuditEntry)))
    finally:
        services.dispose()
    assert entry.record is not None and entry.record["outcome"] == "denied"
    assert entry.details == {"fields": [], "user_id": caseworker.actor.user_id, "reason": "wrong_password"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (logged, repr(entry)):
        assert WRONG not in text and caseworker.actor.name not in text
    assert WRONG.encode() not in sealed and caseworker.actor.name.encode() not in sealed


def test_revoked_user_cannot_sign_in_with_the_right_password(
    client: FlaskClient, caseworker: Any, services: Services
) -> None:
    users.revoke_user(services, caseworker.actor.user_id)
    assert not _signs_in(client, caseworker.actor.name)
    assert client.get("/api/v1/referrals", headers=caseworker.headers).status_code == 401


# -- per-client rate limits ----------------------------------------------------------------------------
@pytest.fixture
def limited(services: Services) -> Any:
    return create_app(services, {"TESTING": True, "RATELIMIT_ENABLED": True})


def _from(app: Any, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address  # documentation addresses (RFC 5737)
    return client


def test_eleventh_sign_in_post_in_a_minute_from_one_address_gets_429(limited: Any, caseworker: Any) -> None:
    client = _from(limited, "198.51.100.7")
    for _ in range(10):
        assert sign_in(client, "nobody", WRONG).status_code == 422
    resp = sign_in(client, caseworker.actor.name)  # even the right password, from this address
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    html = resp.get_data(as_text=True)
    assert "Too many sign-in attempts from your network address. Wait a minute and try again." in html
    assert client.get("/login").status_code == 200  # showing the form does not count
    assert sign_in(_from(limited, "198.51.100.8"), caseworker.actor.name).status_code == 302


def test_rate_limited_sign_in_message_is_in_urdu(limited: Any) -> None:
    client = _from(limited, "198.51.100.9")
    client.get("/login?lang=ur")
    for _ in range(10):
        sign_in(client, "nobody", WRONG)
    resp = sign_in(client, "nobody", WRONG)
    assert resp.status_code == 429
    assert "ایک منٹ انتظار کریں" in resp.get_data(as_text=True)


def test_bearer_token_guessing_gets_429_while_other_clients_are_served(limited: Any, caseworker: Any) -> None:
    guesser = _from(limited, "203.0.113.5")
    for i in range(20):
        resp = guesser.get("/api/v1/referrals", headers={"Authorization": f"Bearer rs_guess{i}"})
        assert resp.status_code == 401
    resp = guesser.get("/api/v1/referrals", headers={"Authorization": "Bearer rs_guess-again"})
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "too_many_requests"
    assert set(resp.get_json()["error"]) >= {"code", "message", "fields"}
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    honest = _from(limited, "203.0.113.6")
    assert honest.get("/api/v1/referrals", headers=caseworker.headers).status_code == 200


def test_successful_api_calls_do_not_count_towards_the_failure_limit(limited: Any, caseworker: Any) -> None:
    client = _from(limited, "203.0.113.7")
    for _ in range(30):
        assert client.get("/api/v1/referrals", headers=caseworker.headers).status_code == 200
    for _ in range(19):
        assert client.get("/api/v1/referrals").status_code == 401
    assert client.get("/api/v1/referrals", headers=caseworker.headers).status_code == 200


def test_rate_limits_can_be_switched_off_by_environment(home: Path, clock: FakeClock, caseworker: Any) -> None:
    services = bootstrap(embedded_settings(home, REFERRAL_RATELIMIT_ENABLED="0"), clock=clock)
    try:
        client = _from(create_app(services, {"TESTING": True}), "198.51.100.10")
        for _ in range(12):
            assert sign_in(client, "nobody", WRONG).status_code == 422
    finally:
        services.dispose()


# -- RFC 6750 challenge ----------------------------------------------------------------------------------
def test_401_without_a_token_names_the_bearer_scheme(client: FlaskClient) -> None:
    resp = client.get("/api/v1/referrals")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="referral-service"'


def test_401_for_a_bad_token_says_invalid_token(client: FlaskClient) -> None:
    resp = client.get("/api/v1/referrals", headers={"Authorization": "Bearer rs_not-a-token"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="referral-service", error="invalid_token"'


def test_other_api_answers_carry_no_challenge(client: FlaskClient, caseworker: Any) -> None:
    assert "WWW-Authenticate" not in client.get("/api/v1/referrals", headers=caseworker.headers).headers
