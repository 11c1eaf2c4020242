"""Text that cannot be stored as UTF-8 text (a lone surrogate such as "\\ud800") or in PostgreSQL text
(U+0000) is refused where it comes in: a JSON body (400), a web form (a form message), a sign-in name
(an unknown name). Nothing is written, and no answer quotes the text.

The NUL cases on PostgreSQL itself are in tests/integration/test_nul_input_postgres.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from referral_service.domain.errors import Unauthenticated
from referral_service.services import users
from tests.e2e.test_api_validation import error_of, row_counts
from tests.e2e.test_web_forms import PASSWORD, sign_in, submit, valid_form
from tests.factories import partner, referral_body
from tests.pipeline import drain

MEDICAL = "p-peshawar-medical"


def _post_raw(client: Any, path: str, raw: str | bytes, headers: dict[str, str]) -> Any:
    return client.post(path, data=raw, content_type="application/json", headers=headers)


def _referral_text(**subject: str) -> str:
    """A valid referral body as JSON text with `subject` fields spliced in as raw JSON string literals."""
    body = referral_body(subject__cnic=None, subject__phone=None)
    text = json.dumps(body)
    for name, literal in subject.items():
        current = json.dumps(body["subject"][name])
        text = text.replace(f'"{name}": {current}', f'"{name}": "{literal}"', 1)
    return text


# A JSON string literal (as sent) → refused, and why.
REFUSED = {
    "lone_high_surrogate": "Zarmeena\\ud800Khattak",
    "lone_low_surrogate": "Zarmeena\\udc00Khattak",
    "high_surrogate_at_the_end": "Zarmeena Khattak\\uD83D",
    "two_highs": "Zarmeena\\ud83d\\ud83d",
    "low_then_high": "Zarmeena\\ude00\\ud83d",
    "pair_then_lone_low": "Zarmeena\\ud83d\\ude00\\ude00",
    "nul": "Zarmeena\\u0000Khattak",
    "escaped_backslash_then_nul": "back\\\\\\u0000slash",  # \\ then \u0000
}
# A JSON string literal (as sent) → what is stored and shown.
TAKEN = {
    "surrogate_pair": ("Zarmeena \\ud83d\\ude00", "Zarmeena \U0001f600"),
    "raw_emoji": ("Zarmeena \U0001f600", "Zarmeena \U0001f600"),
    "escaped_backslash_u_d800_is_text": ("back\\\\ud800slash", "back\\ud800slash"),
    "escaped_backslash_u_0000_is_text": ("back\\\\u0000slash", "back\\u0000slash"),
    "urdu": ("زرمینہ خٹک", "زرمینہ خٹک"),
}


@pytest.mark.parametrize("literal", REFUSED.values(), ids=REFUSED.keys())
def test_a_referral_with_a_lone_surrogate_or_nul_is_400_and_nothing_is_stored(
    services: Any, client: Any, make_user: Any, literal: str
) -> None:
    cw = make_user("caseworker")
    before = row_counts(services)
    resp = _post_raw(client, "/api/v1/referrals", _referral_text(full_name=literal), cw.headers)
    error = error_of(resp, 400, "malformed_json")
    assert "UTF-8" in error["message"] or "NUL" in error["message"], error
    assert "Zarmeena" not in resp.get_data(as_text=True)
    assert row_counts(services) == before


@pytest.mark.parametrize(("literal", "stored"), TAKEN.values(), ids=TAKEN.keys())
def test_text_that_only_looks_like_an_escape_or_a_valid_pair_is_taken_as_sent(
    client: Any, make_user: Any, literal: str, stored: str
) -> None:
    cw = make_user("caseworker")
    resp = _post_raw(client, "/api/v1/referrals", _referral_text(full_name=literal), cw.headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    shown = client.get(f"/api/v1/referrals/{resp.get_json()['id']}", headers=cw.headers).get_json()
    assert shown["subject"]["full_name"] == stored


def test_surrogates_encoded_in_the_raw_bytes_are_400(services: Any, client: Any, make_user: Any) -> None:
    # CESU-style bytes of U+D800 (ED A0 80): not UTF-8, but Python's JSON reader lets them through.
    cw = make_user("caseworker")
    raw = (
        _referral_text(full_name="Zarmeena")
        .replace('"Zarmeena"', '"Zar\x01"')
        .encode()
        .replace(b"\x01", b"\xed\xa0\x80")
    )
    before = row_counts(services)
    error_of(_post_raw(client, "/api/v1/referrals", raw, cw.headers), 400, "malformed_json")
    assert row_counts(services) == before


@pytest.mark.parametrize(
    "where",
    ["key", "list", "deep"],
)
def test_a_lone_surrogate_anywhere_in_a_body_is_found(client: Any, make_user: Any, where: str) -> None:
    admin = make_user("admin")
    body = json.dumps(partner(id="p-surrogate"))
    if where == "key":
        body = body.replace('"name":', '"na\\ud800me":', 1)
    elif where == "list":
        body = body.replace('"languages": [', '"languages": ["\\udfff", ', 1)
    else:
        body = body[:-1] + ', "x": [[{"y": ["\\ud800"]}]]}'
    error_of(_post_raw(client, "/api/v1/partners", body, admin.headers), 400, "malformed_json")
    assert client.get("/api/v1/partners/p-surrogate", headers=admin.headers).status_code == 404


@pytest.mark.parametrize("path", ["decline", "close"])
def test_a_lone_surrogate_in_a_partners_note_is_400_and_the_assignment_is_unchanged(
    services: Any, client: Any, make_user: Any, add_partner: Any, path: str
) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()["id"]
    drain(services)
    [a] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    state = "offered"
    if path == "close":
        assert client.post(f"/api/v1/assignments/{a['id']}/accept", headers=staff.headers).status_code == 200
        state = "accepted"
    choice = '"reason": "other"' if path == "decline" else '"outcome": "other"'
    raw = "{" + choice + ', "note": "called \\ud800 twice"}'
    error_of(_post_raw(client, f"/api/v1/assignments/{a['id']}/{path}", raw, staff.headers), 400, "malformed_json")
    [after] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    assert after["status"] == state


# -- web forms and sign-in ---------------------------------------------------------------------------
@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


@pytest.mark.parametrize("field", ["subject.full_name", "incident.type", "incident.narrative", "subject.address"])
def test_a_web_referral_form_with_nul_is_refused_with_a_message_and_nothing_is_stored(
    services: Any, client: FlaskClient, caseworker: Any, field: str
) -> None:
    sign_in(client, caseworker.actor.name)
    before = row_counts(services)
    resp = submit(client, valid_form(**{field: "before\x00after"}))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422, html[:500]
    assert "cannot be stored" in html
    assert row_counts(services) == before


def test_a_web_decline_with_nul_in_the_note_is_refused_with_a_message(
    services: Any, client: FlaskClient, make_user: Any, add_partner: Any
) -> None:
    from tests.e2e.test_web_forms import csrf_token

    add_partner()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id=MEDICAL, password=PASSWORD)
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()["id"]
    drain(services)
    [a] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    sign_in(client, staff.actor.name)
    token = csrf_token(client, f"/referrals/{rid}")
    resp = client.post(
        f"/assignments/{a['id']}/decline",
        data={"reason": "other", "note": "called\x00twice", "referral_id": rid, "csrf_token": token},
    )
    assert resp.status_code == 422, resp.get_data(as_text=True)[:500]
    assert "cannot be stored" in resp.get_data(as_text=True)
    [after] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    assert after["status"] == "offered"


@pytest.mark.parametrize("suffix", ["\x00", "\ud800", "\udfff"])
def test_a_sign_in_name_that_cannot_be_stored_is_an_unknown_name(services: Any, caseworker: Any, suffix: str) -> None:
    with pytest.raises(Unauthenticated):
        users.sign_in(services, caseworker.actor.name + suffix, PASSWORD)
    # And it is not counted against the real account: the right password still works at once.
    assert users.sign_in(services, caseworker.actor.name, PASSWORD).user_id == caseworker.actor.user_id
