"""HTTP edges an attacker reaches without an account: redirects after sign-in, forged cursors on pages,
bodies declared too large, HSTS and forwarded headers, and who may read /metrics."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from referral_service.app import HSTS, MAX_BODY_BYTES, create_app
from referral_service.bootstrap import bootstrap
from tests.conftest import embedded_settings
from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in
from tests.factories import referral_body
from tests.pipeline import drain


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


# CR/LF and other control characters: a redirect header cannot carry them, so they once made a 500.
UNSAFE_NEXT = [
    "/referrals\r\nSet-Cookie: session=forged",
    "/referrals\nX-Injected: 1",
    "/refer\trals",
    "/referrals\x00",
    "/referrals\x7f",
]


@pytest.mark.parametrize("target", UNSAFE_NEXT, ids=["crlf", "lf", "tab", "nul", "del"])
def test_sign_in_with_a_control_character_in_next_goes_home(client: FlaskClient, caseworker: Any, target: str) -> None:
    token = csrf_token(client, "/login")
    resp = client.post(
        "/login", data={"name": caseworker.actor.name, "password": PASSWORD, "csrf_token": token, "next": target}
    )
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"
    assert "X-Injected" not in resp.headers
    page = client.get(f"/login?next={target}")
    assert page.status_code in (200, 302)


def test_a_partner_form_with_a_control_character_in_next_comes_back_to_the_inbox(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    partner_id = add_partner()["id"]
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
    drain(services)
    staff = make_user("partner", partner_id=partner_id, password=PASSWORD)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    sign_in(client, staff.actor.name)
    # Accepting again is a conflict, which sends the partner back to `next`, or else to the inbox.
    resp = client.post(
        f"/assignments/{offer['id']}/accept",
        data={"csrf_token": csrf_token(client, "/inbox"), "next": "/inbox\r\nX-Injected: 1"},
    )
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/inbox"
    assert "X-Injected" not in resp.headers


def _forged(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("path", ["/referrals", "/inbox"])
def test_a_page_with_a_forged_cursor_shows_an_error_page_not_a_500(
    client: FlaskClient, make_user: Any, path: str
) -> None:
    supervisor = make_user("supervisor", password=PASSWORD)
    sign_in(client, supervisor.actor.name)
    resp = client.get(f"{path}?cursor={_forged(['2026-01-01T00:00:00', 'x'])}")
    assert resp.status_code == 422
    assert resp.mimetype == "text/html"


@pytest.fixture
def app_with(home: Path, clock: Any) -> Iterator[Callable[..., Any]]:
    """create_app on the test's database with extra REFERRAL_* settings."""
    made: list[Any] = []

    def _make(**env: str) -> Any:
        services = bootstrap(embedded_settings(home, **env), clock=clock)
        made.append(services)
        return create_app(services, {"TESTING": True})

    yield _make
    for services in made:
        services.dispose()


# -- bodies declared too large ---------------------------------------------------------------------------
class _Unreadable(io.RawIOBase):
    """A request body that must never be read."""

    reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        type(self).reads += 1
        raise AssertionError("the body was read")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/referrals"),
        ("POST", "/login"),
        ("GET", "/healthz"),
        ("POST", "/logout"),
        ("POST", "/api/v1/assignments/x/accept"),
    ],
)
def test_a_body_declared_over_the_limit_is_refused_unread_with_the_json_413(
    client: FlaskClient, method: str, path: str
) -> None:
    _Unreadable.reads = 0
    resp = client.open(
        path,
        method=method,
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"wsgi.input": _Unreadable(), "CONTENT_LENGTH": str(300 * 1024 * 1024)},
    )
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"
    assert _Unreadable.reads == 0


def test_a_body_at_the_limit_is_still_read(client: FlaskClient, make_user: Any) -> None:
    cw = make_user("caseworker")
    body = b'{"x": "' + b"a" * (MAX_BODY_BYTES - 20) + b'"}'
    resp = client.post("/api/v1/referrals", data=body, content_type="application/json", headers=cw.headers)
    assert resp.status_code == 422  # read and validated: the unknown field is counted, never named
    fields = resp.get_json()["error"]["fields"]
    assert fields["_unknown"] == ["1 field(s) that this object does not have (see /api/v1/openapi.json)"]
    assert "x" not in fields


# -- HSTS and forwarded headers -------------------------------------------------------------------------
def test_hsts_is_sent_over_https_only(client: FlaskClient) -> None:
    assert client.get("/healthz", base_url="https://referrals.example").headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in client.get("/healthz", base_url="http://referrals.example").headers
    page = client.get("/login", base_url="https://referrals.example")
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_a_forwarded_scheme_is_ignored_unless_proxies_are_trusted(app_with: Callable[..., Any]) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    untrusting = app_with().test_client()
    assert "Strict-Transport-Security" not in untrusting.get("/healthz", headers=forwarded).headers
    trusting = app_with(REFERRAL_TRUSTED_PROXIES="1").test_client()
    assert trusting.get("/healthz", headers=forwarded).headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in trusting.get("/healthz").headers


def test_one_trusted_proxy_believes_only_the_last_forwarded_hop(app_with: Callable[..., Any]) -> None:
    app = app_with(REFERRAL_TRUSTED_PROXIES="1")
    # A client's own "https" arrives first; the one proxy appends what it saw (http) last.
    resp = app.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https, http"})
    assert "Strict-Transport-Security" not in resp.headers


# -- /metrics --------------------------------------------------------------------------------------------
METRICS_TOKEN = "m" * 40


def test_metrics_are_not_served_when_no_token_is_configured(client: FlaskClient) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found"
    assert b"http_requests_total" not in resp.data


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer "]
)
def test_metrics_need_the_configured_token(app_with: Callable[..., Any], authorization: str | None) -> None:
    client = app_with(REFERRAL_METRICS_TOKEN=METRICS_TOKEN).test_client()
    resp = client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "unauthenticated"
    assert b"http_requests_total" not in resp.data


def test_metrics_are_served_to_a_scraper_with_the_token(app_with: Callable[..., Any]) -> None:
    client = app_with(REFERRAL_METRICS_TOKEN=METRICS_TOKEN).test_client()
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert "http_requests_total" in resp.get_data(as_text=True)
