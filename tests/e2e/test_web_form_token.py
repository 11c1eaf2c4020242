"""The referral form carries a one-time token: sending the same form twice makes one referral."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

from tests.e2e.test_web_forms import PASSWORD, sign_in, valid_form

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def _rendered_form(client: FlaskClient) -> dict[str, str]:
    html = client.get("/referrals/new").get_data(as_text=True)
    csrf, token = _CSRF.search(html), _FORM_TOKEN.search(html)
    assert csrf and token, "the form has a CSRF token and a one-time form token"
    return {"csrf_token": csrf.group(1), "form_token": token.group(1)}


def _rows(client: FlaskClient) -> int:
    return client.get("/referrals").get_data(as_text=True).count("referral-row")


def test_the_same_form_sent_twice_makes_one_referral(client: FlaskClient, make_user: Any) -> None:
    caseworker = make_user("caseworker", password=PASSWORD)
    sign_in(client, caseworker.actor.name)
    html = client.get("/referrals/new").get_data(as_text=True)
    # every hidden field the page carries, sent back twice as a browser would (double click, back and resend)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    first = client.post("/referrals/new", data={**valid_form(), **hidden})
    second = client.post("/referrals/new", data={**valid_form(), **hidden})
    assert first.status_code == second.status_code == 302
    html = client.get(second.headers["Location"]).get_data(as_text=True)
    assert _rows(client) == 1
    assert second.headers["Location"] == first.headers["Location"]
    assert "This form was already submitted; this is the referral it made." in html


def test_each_rendering_of_the_form_has_its_own_token(client: FlaskClient, make_user: Any) -> None:
    caseworker = make_user("caseworker", password=PASSWORD)
    sign_in(client, caseworker.actor.name)
    one, two = _rendered_form(client), _rendered_form(client)
    assert one["form_token"] != two["form_token"]
    client.post("/referrals/new", data={**valid_form(), **one})
    client.post("/referrals/new", data={**valid_form(**{"subject.cnic": "", "subject.phone": ""}), **two})
    assert _rows(client) == 2


def test_the_same_form_token_with_other_details_stores_nothing_new(client: FlaskClient, make_user: Any) -> None:
    caseworker = make_user("caseworker", password=PASSWORD)
    sign_in(client, caseworker.actor.name)
    hidden = _rendered_form(client)
    client.post("/referrals/new", data={**valid_form(), **hidden})
    changed = client.post("/referrals/new", data={**valid_form(**{"subject.full_name": "Gul Bibi"}), **hidden})
    assert changed.status_code == 409
    html = changed.get_data(as_text=True)
    assert "This form was already sent once with other details." in html
    assert 'value="Gul Bibi"' in html  # nothing typed is lost
    fresh = _FORM_TOKEN.search(html)
    assert fresh and fresh.group(1) != hidden["form_token"]
    assert _rows(client) == 1


def test_a_token_is_per_user(client: FlaskClient, make_user: Any) -> None:
    one, two = make_user("caseworker", password=PASSWORD), make_user("caseworker", password=PASSWORD)
    sign_in(client, one.actor.name)
    hidden = _rendered_form(client)
    client.post("/referrals/new", data={**valid_form(), **hidden})
    client.post("/logout", data={"csrf_token": hidden["csrf_token"]})
    sign_in(client, two.actor.name)
    csrf = _rendered_form(client)["csrf_token"]
    client.post(
        "/referrals/new", data={**valid_form(**{"subject.cnic": "", "subject.phone": ""}), **hidden, "csrf_token": csrf}
    )
    assert _rows(client) == 1  # two's own referral, not one's
