"""The partner's inbox page says what is new since the user's last visit: new offers, withdrawals and
offers that expired unanswered; each staff member has their own visits, and the API is no visit."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.conftest import FakeClock
from tests.e2e.test_web_forms import PASSWORD, sign_in
from tests.factories import referral_body
from tests.pipeline import drain

PARTNER = "p-peshawar-medical"


def _refer(api: FlaskClient, headers: dict[str, str], n: int) -> str:
    body = referral_body(subject__cnic=f"17301-765432{n}-5", subject__phone=f"+92300765432{n}")
    resp = api.post("/api/v1/referrals", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def _news(page: str) -> str:
    start = page.find('id="inbox-news"')
    return page[start : page.find("</p>", start)] if start >= 0 else ""


def test_the_inbox_shows_new_offers_and_withdrawals_since_the_users_last_visit(
    app: Any, client: FlaskClient, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    add_partner(capacity=10)
    api = app.test_client()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id=PARTNER, password=PASSWORD)
    first = _refer(api, cw.headers, 1)
    drain(services)
    clock.advance(minutes=5)

    sign_in(client, staff.actor.name)
    page = client.get("/inbox").get_data(as_text=True)
    assert "New to you:" in _news(page) and "new offers: 1" in _news(page)  # never visited: all is new
    assert page.count("news-offered") == 1

    clock.advance(minutes=5)
    page = client.get("/inbox").get_data(as_text=True)
    assert "Nothing new since your last visit" in _news(page)
    assert "news-offered" not in page

    clock.advance(minutes=5)
    second = _refer(api, cw.headers, 2)
    drain(services)
    resp = api.post(f"/api/v1/referrals/{first}/withdraw", json={"note": "moved away"}, headers=cw.headers)
    assert resp.status_code == 200
    drain(services)
    clock.advance(minutes=1)
    # The partner's own system reading the inbox through the API is no visit: the news stays for staff.
    assert api.get("/api/v1/assignments", headers=staff.headers).status_code == 200
    page = client.get("/inbox").get_data(as_text=True)
    news = _news(page)
    assert "Since your last visit" in news and "new offers: 1" in news and "withdrawn: 1" in news
    assert page.count("news-offered") == 1 and page.count("news-withdrawn") == 1
    rows = {a["referral_id"]: a for a in api.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]}
    assert f'news-offered" id="a-{rows[second]["id"]}"' in page
    assert f'news-withdrawn" id="a-{rows[first]["id"]}"' in page
    assert "news" not in rows[second]  # the API answer is unchanged

    # Another member of the same organisation has visits of their own.
    colleague = make_user("partner", partner_id=PARTNER, password=PASSWORD)
    other = app.test_client()
    sign_in(other, colleague.actor.name)
    assert "New to you:" in _news(other.get("/inbox").get_data(as_text=True))
    clock.advance(minutes=1)
    assert "Nothing new since your last visit" in _news(client.get("/inbox").get_data(as_text=True))


def test_an_offer_that_expired_unanswered_is_news_in_urdu_too(
    app: Any, client: FlaskClient, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    from referral_service.services.deadlines import fire_due_deadlines

    add_partner(capacity=10)
    api = app.test_client()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id=PARTNER, password=PASSWORD)
    _refer(api, cw.headers, 1)
    drain(services)
    clock.advance(minutes=1)
    sign_in(client, staff.actor.name)
    client.get("/inbox")
    clock.advance(days=3)  # past any accept-by time
    fire_due_deadlines(services)
    clock.advance(minutes=1)
    sign_in(client, staff.actor.name)  # the web session ended meanwhile; signing in is no visit
    page = client.get("/inbox", headers={"Accept-Language": "ur"}).get_data(as_text=True)
    assert page.count("news-expired") == 1
    assert "جواب کے بغیر میعاد ختم: 1" in _news(page)
