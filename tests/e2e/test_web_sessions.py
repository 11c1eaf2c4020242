"""Server-side web sessions: logout and revoke end every copy of the cookie; idle and absolute time-outs."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from referral_service.bootstrap import Services
from referral_service.db.models import WebSession
from referral_service.services import users
from tests.conftest import FakeClock
from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


def _signed_in(client: FlaskClient, name: str) -> None:
    assert sign_in(client, name).status_code == 302
    assert client.get("/referrals").status_code == 200


def _saved_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app: Any, cookie: str) -> FlaskClient:
    """A different browser (an attacker who copied the cookie) presenting the saved cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def _rows(services: Services) -> list[WebSession]:
    with services.session_factory() as session:  # closing detaches the rows with their values loaded
        return list(session.scalars(select(WebSession)))


def test_cookie_saved_before_logout_no_longer_opens_pages(app: Any, client: FlaskClient, caseworker: Any) -> None:
    _signed_in(client, caseworker.actor.name)
    saved = _saved_cookie(client)
    assert _replay(app, saved).get("/referrals").status_code == 200  # the copy works while signed in
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")}).status_code == 302
    replayed = _replay(app, saved).get("/referrals")
    assert replayed.status_code == 302
    assert replayed.headers["Location"].startswith("/login")


def test_session_cookie_is_a_browser_session_cookie_holding_no_user_id(
    client: FlaskClient, caseworker: Any, services: Services
) -> None:
    resp = sign_in(client, caseworker.actor.name)
    cookie = resp.headers["Set-Cookie"]
    assert "Expires=" not in cookie and "Max-Age=" not in cookie
    (row,) = _rows(services)
    assert row.user_id == caseworker.actor.user_id and row.ended_at is None
    # only a digest is stored: the cookie's session id is not in the table
    app = client.application
    sid = app.session_interface.get_signing_serializer(app).loads(_saved_cookie(client))["sid"]
    assert len(sid) >= 43 and row.id_hash != sid and sid not in row.id_hash
    assert caseworker.actor.user_id not in _saved_cookie(client)


def test_idle_session_ends_after_the_idle_timeout(
    client: FlaskClient, caseworker: Any, clock: FakeClock, services: Services
) -> None:
    _signed_in(client, caseworker.actor.name)
    clock.advance(minutes=29)
    assert client.get("/referrals").status_code == 200  # activity keeps it alive
    clock.advance(minutes=29)
    assert client.get("/referrals").status_code == 200
    clock.advance(minutes=31)
    resp = client.get("/referrals")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert "Your session has ended. Sign in again." in client.get(resp.headers["Location"]).get_data(as_text=True)
    (row,) = _rows(services)
    assert row.ended_at == clock.now()


def test_session_ends_at_its_absolute_lifetime_even_when_active(
    client: FlaskClient, caseworker: Any, clock: FakeClock
) -> None:
    _signed_in(client, caseworker.actor.name)
    for _ in range(11 * 4):  # eleven hours of a request every quarter of an hour
        clock.advance(minutes=15)
        assert client.get("/referrals").status_code == 200
    clock.advance(minutes=61)
    assert client.get("/referrals").status_code == 302


def test_last_seen_is_written_at_most_once_a_minute(
    client: FlaskClient, caseworker: Any, clock: FakeClock, services: Services
) -> None:
    _signed_in(client, caseworker.actor.name)
    (row,) = _rows(services)
    started = row.last_seen_at
    clock.advance(seconds=30)
    client.get("/referrals")
    assert _rows(services)[0].last_seen_at == started
    clock.advance(seconds=31)
    client.get("/referrals")
    assert _rows(services)[0].last_seen_at == clock.now()


def test_timeouts_come_from_the_environment(home: Any, clock: FakeClock) -> None:
    from referral_service.app import create_app
    from referral_service.bootstrap import bootstrap
    from tests.conftest import embedded_settings

    services = bootstrap(
        embedded_settings(home, REFERRAL_SESSION_IDLE_MINUTES="5", REFERRAL_SESSION_MAX_HOURS="1"), clock=clock
    )
    try:
        users.create_user(services, name="short-sessions", role="caseworker", password=PASSWORD)
        client = create_app(services, {"TESTING": True}).test_client()
        _signed_in(client, "short-sessions")
        clock.advance(minutes=6)
        assert client.get("/referrals").status_code == 302
    finally:
        services.dispose()


def test_revoking_the_user_ends_their_open_web_session(
    client: FlaskClient, caseworker: Any, services: Services
) -> None:
    _signed_in(client, caseworker.actor.name)
    done = users.revoke_user(services, caseworker.actor.user_id)
    assert done["sessions_ended"] == 1 and done["tokens_revoked"] == 1
    assert client.get("/referrals").status_code == 302


def test_old_ended_sessions_are_pruned_on_sign_in(
    app: Any, caseworker: Any, clock: FakeClock, services: Services
) -> None:
    first = app.test_client()
    _signed_in(first, caseworker.actor.name)
    first.post("/logout", data={"csrf_token": csrf_token(first, "/referrals")})
    second = app.test_client()
    _signed_in(second, caseworker.actor.name)  # abandoned: times out without a logout
    clock.advance(hours=13)
    assert len(_rows(services)) == 2  # kept a while after ending, for an investigation
    clock.advance(hours=12)
    _signed_in(app.test_client(), caseworker.actor.name)
    with services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(WebSession)) == 1
