"""HTTP edges an attacker reaches without an account: redirects after sign-in, forged list cursors on pages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in
from tests.factories import referral_body
from tests.pipeline import drain


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


# CR/LF and other control characters: a redirect header cannot carry them, so they once made a 500.
UNSAFE_NEXT = ["/referrals\r\nSet-Cookie: session=forged", "/referrals\nX-Injected: 1", "/refer\trals",
               "/referrals\x00", "/referrals\x7f"]


@pytest.mark.parametrize("target", UNSAFE_NEXT, ids=["crlf", "lf", "tab", "nul", "del"])
def test_sign_in_with_a_control_character_in_next_goes_home(client: FlaskClient, caseworker: Any,
                                                            target: str) -> None:
    token = csrf_token(client, "/login")
    resp = client.post("/login", data={"name": caseworker.actor.name, "password": PASSWORD, "csrf_token": token,
                                       "next": target})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"
    assert "X-Injected" not in resp.headers
    page = client.get(f"/login?next={target}")
    assert page.status_code in (200, 302)


def test_a_partner_form_with_a_control_character_in_next_comes_back_to_the_inbox(
        client: FlaskClient, services: Any, make_user: Any, add_partner: Any) -> None:
    partner_id = add_partner()["id"]
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
    drain(services)
    staff = make_user("partner", partner_id=partner_id, password=PASSWORD)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    sign_in(client, staff.actor.name)
    # Accepting again is a conflict, which sends the partner back to `next`, or else to the inbox.
    resp = client.post(f"/assignments/{offer['id']}/accept",
                       data={"csrf_token": csrf_token(client, "/inbox"), "next": "/inbox\r\nX-Injected: 1"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/inbox"
    assert "X-Injected" not in resp.headers


def _forged(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("path", ["/referrals", "/inbox"])
def test_a_page_with_a_forged_cursor_shows_an_error_page_not_a_500(client: FlaskClient, make_user: Any,
                                                                    path: str) -> None:
    supervisor = make_user("supervisor", password=PASSWORD)
    sign_in(client, supervisor.actor.name)
    resp = client.get(f"{path}?cursor={_forged(['2026-01-01T00:00:00', 'x'])}")
    assert resp.status_code == 422
    assert resp.mimetype == "text/html"
