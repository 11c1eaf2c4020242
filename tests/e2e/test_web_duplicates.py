"""Possible duplicates on the supervision page: listed side by side, confirmed or dismissed, in English and Urdu."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in, submit, valid_form
from tests.factories import referral_body


def _api_submit(client: FlaskClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def _two_pairs(client: FlaskClient, make_user: Any) -> tuple[Any, list[dict[str, Any]]]:
    a, b = make_user("caseworker"), make_user("caseworker")
    supervisor = make_user("supervisor", password=PASSWORD)
    first = _api_submit(client, a.headers)
    second = _api_submit(
        client, b.headers, subject__full_name="Gul Bano", subject__cnic=None, subject__date_of_birth="1991-02-03"
    )
    third = _api_submit(
        client, b.headers, subject__full_name="Bibi Zarmeena", subject__phone=None, subject__district="Mardan"
    )
    pending = client.get("/api/v1/duplicates", headers=supervisor.headers).get_json()["items"]
    assert {(d["referral_id"], d["earlier_referral_id"]) for d in pending} == {
        (second["id"], first["id"]),
        (third["id"], first["id"]),
    }
    return supervisor, pending


def _decide(client: FlaskClient, duplicate_id: str, verb: str, token: str | None = None) -> Any:
    token = token or csrf_token(client, "/supervision")
    return client.post(f"/supervision/duplicates/{duplicate_id}/{verb}", data={"csrf_token": token})


def test_supervisor_sees_pending_pairs_side_by_side_with_confirm_and_dismiss(
    client: FlaskClient, make_user: Any
) -> None:
    supervisor, pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    html = client.get("/supervision").get_data(as_text=True)
    section = html[html.index('id="duplicates"') :]
    assert "Possible duplicates" in section
    for d in pending:
        pair = section[section.index(f'id="dup-{d["id"]}"') :]
        pair = pair[: pair.index("</article>")]
        for side in (d["referral"], d["earlier_referral"]):
            assert f'href="/referrals/{side["id"]}"' in pair and side["reference"] in pair
            assert side["subject"]["full_name"] in pair and side["subject"]["district"] in pair
        assert "Zarmeena Khattak" in pair and "1990-04-12" in pair
        assert f'action="/supervision/duplicates/{d["id"]}/confirm"' in pair
        assert f'action="/supervision/duplicates/{d["id"]}/dismiss"' in pair
        assert pair.count('name="csrf_token"') == 2
    by_referral = {d["referral"]["subject"]["full_name"]: d for d in pending}
    gul = section[section.index(f'id="dup-{by_referral["Gul Bano"]["id"]}"') :]
    assert "<h3>Matched on: phone number</h3>" in gul[:400]
    bibi = section[section.index(f'id="dup-{by_referral["Bibi Zarmeena"]["id"]}"') :]
    assert "<h3>Matched on: CNIC</h3>" in bibi[:400] and "Mardan" in bibi
    # Nothing beyond what tells two people apart: no CNIC, phone or address on the page.
    for marker in ("17301", "3001234567", "Hayatabad"):
        assert marker not in section, marker


def test_confirm_and_dismiss_from_the_page_decide_and_leave_the_pending_list(
    client: FlaskClient, make_user: Any
) -> None:
    supervisor, pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    confirm_me, dismiss_me = pending

    resp = _decide(client, confirm_me["id"], "confirm")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/supervision")
    html = client.get("/supervision").get_data(as_text=True)
    assert "Confirmed: the two referrals are now linked as one person" in html
    assert f'id="dup-{confirm_me["id"]}"' not in html and f'id="dup-{dismiss_me["id"]}"' in html

    resp = _decide(client, dismiss_me["id"], "dismiss")
    assert resp.status_code == 302
    html = client.get("/supervision").get_data(as_text=True)
    assert "Dismissed: the two referrals stay separate people." in html
    assert "No possible duplicates to decide." in html and 'id="dup-' not in html

    def status(dup: dict[str, Any], wanted: str) -> list[str]:
        items = client.get(f"/api/v1/duplicates?status={wanted}", headers=supervisor.headers).get_json()["items"]
        return [d["id"] for d in items if d["id"] == dup["id"]]

    assert status(confirm_me, "confirmed") == [confirm_me["id"]]
    assert status(dismiss_me, "dismissed") == [dismiss_me["id"]]

    # Deciding again (another supervisor's tab, say) says so instead of failing.
    resp = _decide(client, confirm_me["id"], "dismiss")
    assert resp.status_code == 302
    assert "Another supervisor has already decided on this pair." in client.get("/supervision").get_data(as_text=True)
    assert status(confirm_me, "confirmed") == [confirm_me["id"]]
    assert _decide(client, "no-such-id", "confirm").status_code == 404


def test_the_supervision_page_in_urdu_translates_the_duplicates_section(client: FlaskClient, make_user: Any) -> None:
    supervisor, pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    html = client.get("/supervision?lang=ur").get_data(as_text=True)
    assert 'dir="rtl"' in html and 'lang="ur"' in html
    assert "ممکنہ دہرے اندراج" in html and "تصدیق کریں: ایک ہی فرد" in html and "مسترد کریں: الگ الگ افراد" in html
    assert "Possible duplicates" not in html
    _decide(client, pending[0]["id"], "confirm", csrf_token(client, "/supervision?lang=ur"))
    _decide(client, pending[1]["id"], "dismiss", csrf_token(client, "/supervision?lang=ur"))
    html = client.get("/supervision?lang=ur").get_data(as_text=True)
    assert "مسترد: دونوں ریفرل الگ الگ افراد کے ہی رہیں گے۔" in html
    assert "فیصلے کے لیے کوئی ممکنہ دہرا اندراج نہیں۔" in html


def test_deciding_needs_a_csrf_token_and_a_supervisor(client: FlaskClient, make_user: Any, app: Any) -> None:
    supervisor, pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    assert client.post(f"/supervision/duplicates/{pending[0]['id']}/confirm").status_code == 400

    caseworker = make_user("caseworker", password=PASSWORD)
    other = app.test_client()
    sign_in(other, caseworker.actor.name)
    token = csrf_token(other, "/referrals/new")
    for verb in ("confirm", "dismiss"):
        resp = other.post(f"/supervision/duplicates/{pending[0]['id']}/{verb}", data={"csrf_token": token})
        assert resp.status_code == 403
    still = client.get("/api/v1/duplicates", headers=supervisor.headers).get_json()["items"]
    assert len(still) == 2


def test_a_supervisor_sees_the_confirmed_link_on_the_referral_page(client: FlaskClient, make_user: Any) -> None:
    supervisor, pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    _decide(client, pending[0]["id"], "confirm")
    html = client.get(f"/referrals/{pending[0]['referral_id']}").get_data(as_text=True)
    assert "Confirmed as the same person as" in html
    assert f'href="/referrals/{pending[0]["earlier_referral_id"]}"' in html
    assert pending[0]["earlier_referral"]["reference"] in html


def test_a_name_of_invisible_characters_only_is_refused_on_the_form(client: FlaskClient, make_user: Any) -> None:
    caseworker = make_user("caseworker", password=PASSWORD)
    sign_in(client, caseworker.actor.name)
    resp = submit(client, valid_form(**{"subject.full_name": "\u200b\u202e"}))
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    block = html[html.index('id="f-subject-full_name"') :]
    assert "Enter the name in letters: spaces or invisible characters alone are not a name." in block[:2000]


def test_the_duplicates_section_is_on_the_page_once_and_not_in_the_title(client: FlaskClient, make_user: Any) -> None:
    supervisor, _pending = _two_pairs(client, make_user)
    sign_in(client, supervisor.actor.name)
    html = client.get("/supervision").get_data(as_text=True)
    title = html[html.index("<title>") : html.index("</title>")]
    assert "<" not in title[len("<title>") :] and title.startswith("<title>Supervision")
    assert html.count('id="duplicates"') == 1
    assert html.index("<h1>") < html.index('id="duplicates"')
