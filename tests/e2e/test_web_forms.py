"""The server-rendered pages through Flask's test client: sign-in, CSRF, the referral form, inbox, roles."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.pipeline import drain

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    token = csrf_token(client, "/login")
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token})


def valid_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "subject.full_name": "Zarmeena Khattak",
        "subject.date_of_birth": "1990-04-12",
        "subject.sex": "female",
        "subject.cnic": "17301-1234567-2",
        "subject.phone": "+923001234567",
        "subject.address": "House 12, Street 4, Hayatabad",
        "subject.province": "Khyber Pakhtunkhwa",
        "subject.district": "Peshawar",
        "subject.preferred_language": "ps",
        "incident.type": "bombing",
        "incident.date": "2026-01-30",
        "incident.narrative": "Injured at the bazaar blast",
        "needs": ["medical"],
        "risk_level": "high",
        "consent.given": "yes",
        "consent.method": "verbal",
        "consent.share": ["contact", "incident"],
        "preferences.staff_sex": "any",
    }
    form.update(overrides)
    return form


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


def submit(client: FlaskClient, form: dict[str, Any]) -> Any:
    return client.post("/referrals/new", data={**form, "csrf_token": csrf_token(client, "/referrals/new")})


def test_sign_in_with_the_right_password_opens_my_referrals(client: FlaskClient, caseworker: Any) -> None:
    resp = sign_in(client, caseworker.actor.name)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"
    page = client.get("/", follow_redirects=True)
    assert "My referrals" in page.get_data(as_text=True)


def test_sign_in_with_a_wrong_password_says_so_and_keeps_the_name(client: FlaskClient, caseworker: Any) -> None:
    resp = sign_in(client, caseworker.actor.name, "wrong password")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "Wrong name or password." in html
    assert f'value="{caseworker.actor.name}"' in html
    assert client.get("/referrals").status_code == 302


def test_session_cookie_is_secure_httponly_and_samesite(client: FlaskClient, caseworker: Any) -> None:
    resp = sign_in(client, caseworker.actor.name)
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_unauthenticated_page_redirects_to_login_and_back(client: FlaskClient, caseworker: Any) -> None:
    resp = client.get("/referrals/new")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")
    token = csrf_token(client, "/login")
    after = client.post(
        "/login",
        data={"name": caseworker.actor.name, "password": PASSWORD, "csrf_token": token, "next": "/referrals/new"},
    )
    assert after.headers["Location"] == "/referrals/new"


def test_sign_in_never_redirects_to_another_site(client: FlaskClient, caseworker: Any) -> None:
    token = csrf_token(client, "/login")
    after = client.post(
        "/login",
        data={"name": caseworker.actor.name, "password": PASSWORD, "csrf_token": token, "next": "//evil.example/phish"},
    )
    assert after.headers["Location"] == "/"


def test_form_post_without_csrf_token_is_rejected(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = client.post("/referrals/new", data=valid_form())
    assert resp.status_code == 400
    assert "This form has expired" in resp.get_data(as_text=True)
    assert client.get("/referrals").get_data(as_text=True).count("referral-row") == 0


def test_login_without_csrf_token_is_rejected(client: FlaskClient, caseworker: Any) -> None:
    resp = client.post("/login", data={"name": caseworker.actor.name, "password": PASSWORD})
    assert resp.status_code == 400
    assert client.get("/referrals").status_code == 302


def test_sign_in_over_https_passes_the_same_origin_referrer_check(client: FlaskClient, caseworker: Any) -> None:
    # Over HTTPS Flask-WTF also demands a same-origin Referer; the pages ask browsers to send one.
    page = client.get("/login", base_url="https://referrals.example")
    assert page.headers["Referrer-Policy"] == "same-origin"
    token = _TOKEN.search(page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    form = {"name": caseworker.actor.name, "password": PASSWORD, "csrf_token": token}
    foreign = client.post(
        "/login", data=form, base_url="https://referrals.example", headers={"Referer": "https://evil.example/login"}
    )
    assert foreign.status_code == 400
    same = client.post(
        "/login",
        data=form,
        base_url="https://referrals.example",
        headers={"Referer": "https://referrals.example/login"},
    )
    assert same.status_code == 302


def test_json_api_needs_no_csrf_token(client: FlaskClient, caseworker: Any) -> None:
    from tests.factories import referral_body

    resp = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers)
    assert resp.status_code == 201


def test_valid_referral_form_submits_and_shows_the_reference(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = submit(client, valid_form())
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"])
    html = page.get_data(as_text=True)
    reference = re.search(r"Referral (VAN-\d{4}-\d{6}) was submitted", html)
    assert reference, html
    assert "Zarmeena Khattak" in html
    listing = client.get("/referrals").get_data(as_text=True)
    assert reference.group(1) in listing and "Zarmeena Khattak" in listing


def test_referral_without_consent_says_it_is_not_routed(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = submit(client, valid_form(**{"consent.given": "no", "consent.method": "", "consent.share": []}))
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not routed: consent was not given" in html


def test_repeat_referral_of_the_same_cnic_warns_its_own_caseworker(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    first = submit(client, valid_form())
    first_reference = _submitted_reference(client.get(first.headers["Location"]).get_data(as_text=True))
    second = submit(client, valid_form(**{"subject.phone": "", "subject.full_name": "Zarmeena K."}))
    html = client.get(second.headers["Location"]).get_data(as_text=True)
    assert (
        f"Possible repeat referral: the CNIC matches an earlier referral ({first_reference}). This referral "
        "is kept separate until a supervisor confirms they are the same person."
    ) in html
    assert "Zarmeena K." in html  # the referral shows the person as entered on it


def test_repeat_of_another_caseworkers_client_flashes_nothing_about_them(
    client: FlaskClient, caseworker: Any, make_user: Any, app: Any
) -> None:
    sign_in(client, caseworker.actor.name)
    first = submit(client, valid_form())
    first_reference = _submitted_reference(client.get(first.headers["Location"]).get_data(as_text=True))

    other = make_user("caseworker", password=PASSWORD)
    b = app.test_client()
    sign_in(b, other.actor.name)
    # B knows only the family phone; name, CNIC and the rest are B's own client's.
    resp = submit(
        b,
        valid_form(
            **{"subject.full_name": "Gul Bano", "subject.cnic": "", "subject.address": "", "subject.date_of_birth": ""}
        ),
    )
    html = b.get(resp.headers["Location"]).get_data(as_text=True)
    assert "was submitted" in html and "Gul Bano" in html
    assert "Possible repeat" not in html and first_reference not in html
    for marker in ("Zarmeena", "17301", "Hayatabad", "1990-04-12"):
        assert marker not in html, marker


def _submitted_reference(html: str) -> str:
    found = re.search(r"Referral (VAN-\d{4}-\d{6}) was submitted", html)
    assert found, html
    return found.group(1)


def test_invalid_field_shows_message_next_to_it_and_keeps_values(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = submit(client, valid_form(**{"subject.cnic": "12345", "needs": [], "risk_level": ""}))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    cnic_block = html[html.index('id="f-subject-cnic"') :]
    assert cnic_block.index("A CNIC has 13 digits") < cnic_block.index('id="f-subject-phone"')
    assert 'value="12345"' in html
    assert 'value="Zarmeena Khattak"' in html
    assert "Injured at the bazaar blast</textarea>" in html
    assert '<option value="Peshawar" selected>' in html
    assert 'id="f-needs-error"' in html and "Choose at least one need." in html
    assert 'id="f-risk_level-error"' in html
    assert re.search(r'value="incident"\s+id="f-consent-share-incident" checked', html)
    assert not re.search(r'value="identity"\s+id="f-consent-share-identity" checked', html)
    assert client.get("/referrals").get_data(as_text=True).count("referral-row") == 0


def test_district_outside_the_chosen_province_is_flagged_on_the_district(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = submit(client, valid_form(**{"subject.province": "Sindh"}))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert 'id="f-subject-district-error"' in html
    assert "Peshawar is not a district of Sindh." in html


def test_future_date_of_birth_is_rejected_in_urdu(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    client.get("/referrals?lang=ur")
    resp = submit(client, valid_form(**{"subject.date_of_birth": "2999-01-01"}))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert 'id="f-subject-date_of_birth-error"' in html
    assert "تاریخ مستقبل کی نہیں ہو سکتی۔" in html


def test_urdu_page_is_right_to_left_and_translated(client: FlaskClient) -> None:
    html = client.get("/login?lang=ur").get_data(as_text=True)
    assert '<html lang="ur" dir="rtl">' in html
    assert "سائن ان" in html
    # remembered for the next page, without the parameter
    again = client.get("/login").get_data(as_text=True)
    assert '<html lang="ur" dir="rtl">' in again


def test_accept_language_chooses_urdu_and_lang_parameter_overrides(client: FlaskClient) -> None:
    html = client.get("/login", headers={"Accept-Language": "ur-PK,ur;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert 'dir="rtl"' in html
    html = client.get("/login?lang=en", headers={"Accept-Language": "ur"}).get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in html


def test_urdu_referral_form_translates_labels_and_choices(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    html = client.get("/referrals/new?lang=ur").get_data(as_text=True)
    assert '<html lang="ur" dir="rtl">' in html
    for urdu in ("نیا ریفرل", "پورا نام", "ضلع", "طبی امداد", "خطرے کی سطح", "رضامندی"):
        assert urdu in html, urdu
    assert "Full name" not in html


def test_wrong_role_gets_a_friendly_403_page(client: FlaskClient, make_user: Any, add_partner: Any) -> None:
    add_partner()
    staff = make_user("partner", partner_id="p-peshawar-medical", password=PASSWORD)
    sign_in(client, staff.actor.name)
    for path in ("/referrals/new", "/referrals", "/supervision"):
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert "text/html" in resp.content_type
        assert "Your role does not give access to this page." in resp.get_data(as_text=True)


def test_caseworker_cannot_open_the_inbox_or_someone_elses_referral(
    client: FlaskClient, caseworker: Any, make_user: Any
) -> None:
    other = make_user("caseworker", password=PASSWORD)
    sign_in(client, other.actor.name)
    referral_url = submit(client, valid_form()).headers["Location"]
    client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")})
    sign_in(client, caseworker.actor.name)
    assert client.get("/inbox").status_code == 403
    resp = client.get(referral_url)
    assert resp.status_code == 403
    assert "Zarmeena" not in resp.get_data(as_text=True)
    assert client.get("/referrals").get_data(as_text=True).count("referral-row") == 0


def test_logout_ends_the_session(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    resp = client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")})
    assert resp.status_code == 302
    assert client.get("/referrals").status_code == 302


def _offered_case(client: FlaskClient, services: Any, make_user: Any, add_partner: Any, **form: Any) -> None:
    add_partner()
    add_partner(id="p-peshawar-legal", name="Peshawar Legal Aid", services=["medical", "legal_aid"])
    cw = make_user("caseworker", password=PASSWORD)
    sign_in(client, cw.actor.name)
    submit(client, valid_form(**form))
    client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")})
    drain(services)


def _partner_of_first_offer(client: FlaskClient, services: Any, make_user: Any) -> tuple[Any, dict[str, Any]]:
    from referral_service.domain.model import Actor, Role
    from referral_service.services import assignments

    supervisor = Actor("sup", Role.SUPERVISOR)
    offer = assignments.inbox(services, supervisor, status="offered", limit=10, cursor=None)["items"][0]
    staff = make_user("partner", partner_id=offer["partner_id"], password=PASSWORD)
    sign_in(client, staff.actor.name)
    return staff, offer


def test_partner_accepts_an_offer_from_the_inbox(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    _offered_case(client, services, make_user, add_partner)
    _, offer = _partner_of_first_offer(client, services, make_user)
    inbox = client.get("/inbox").get_data(as_text=True)
    assert offer["reference"] in inbox
    resp = client.post(
        f"/assignments/{offer['id']}/accept",
        data={"csrf_token": csrf_token(client, "/inbox"), "referral_id": offer["referral_id"]},
    )
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "You accepted the case" in page
    # consented fields only: contact and incident shared, identity not
    assert "Zarmeena Khattak" in page and "+923001234567" in page and "Injured at the bazaar blast" in page
    assert "17301-1234567-2" not in page and "1990-04-12" not in page
    assert 'action="/assignments/' + offer["id"] + '/followup"' in page


def test_partner_declines_with_a_reason_and_loses_the_case(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    _offered_case(client, services, make_user, add_partner)
    _, offer = _partner_of_first_offer(client, services, make_user)
    detail = f"/referrals/{offer['referral_id']}"
    token = csrf_token(client, detail)
    bad = client.post(
        f"/assignments/{offer['id']}/decline",
        data={"csrf_token": token, "referral_id": offer["referral_id"], "reason": "other"},
    )
    assert bad.status_code == 422
    assert "Explain &#39;other&#39; in the note." in bad.get_data(as_text=True)
    resp = client.post(
        f"/assignments/{offer['id']}/decline",
        data={
            "csrf_token": token,
            "referral_id": offer["referral_id"],
            "reason": "no_capacity",
            "note": "full this week",
        },
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox"
    inbox = client.get("/inbox").get_data(as_text=True)
    assert "You declined the case" in inbox and "Declined" in inbox
    assert client.get(detail).status_code == 403


def test_partner_records_followup_and_closes_with_outcome(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    _offered_case(client, services, make_user, add_partner)
    _, offer = _partner_of_first_offer(client, services, make_user)
    detail = f"/referrals/{offer['referral_id']}"
    client.post(
        f"/assignments/{offer['id']}/accept",
        data={"csrf_token": csrf_token(client, "/inbox"), "referral_id": offer["referral_id"]},
    )
    token = csrf_token(client, detail)
    resp = client.post(
        f"/assignments/{offer['id']}/followup",
        data={
            "csrf_token": token,
            "referral_id": offer["referral_id"],
            "outcome": "contacted",
            "note": "appointment on Monday",
        },
    )
    assert resp.status_code == 302
    page = client.get(detail).get_data(as_text=True)
    assert "Follow-up recorded." in page and "Contacted the person" in page and "appointment on Monday" in page
    resp = client.post(
        f"/assignments/{offer['id']}/close",
        data={"csrf_token": token, "referral_id": offer["referral_id"], "outcome": "services_delivered"},
    )
    assert resp.headers["Location"] == "/inbox"
    assert "The case is closed." in client.get("/inbox").get_data(as_text=True)


def test_partner_cannot_act_on_another_partners_assignment(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    _offered_case(client, services, make_user, add_partner)
    from referral_service.domain.model import Actor, Role
    from referral_service.services import assignments

    offer = assignments.inbox(services, Actor("sup", Role.SUPERVISOR), status="offered", limit=10, cursor=None)[
        "items"
    ][0]
    other_partner = "p-peshawar-legal" if offer["partner_id"] != "p-peshawar-legal" else "p-peshawar-medical"
    staff = make_user("partner", partner_id=other_partner, password=PASSWORD)
    sign_in(client, staff.actor.name)
    resp = client.post(
        f"/assignments/{offer['id']}/accept",
        data={"csrf_token": csrf_token(client, "/inbox"), "referral_id": offer["referral_id"]},
    )
    assert resp.status_code == 403
    assert client.get(f"/referrals/{offer['referral_id']}").status_code == 403


def test_supervision_lists_unroutable_referrals(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    _offered_case(
        client,
        services,
        make_user,
        add_partner,
        **{"subject.district": "Quetta", "subject.province": "Balochistan", "subject.cnic": "", "subject.phone": ""},
    )
    supervisor = make_user("supervisor", password=PASSWORD)
    sign_in(client, supervisor.actor.name)
    html = client.get("/supervision").get_data(as_text=True)
    assert html.count("unroutable-row") == 1 and "Quetta" in html
    assert "Nothing is overdue." in html


def test_supervisor_sees_why_each_partner_was_chosen_and_can_close_an_accepted_case(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any
) -> None:
    from referral_service.domain.commands import AcceptAssignment
    from referral_service.domain.model import Actor, Role
    from referral_service.services import assignments

    _offered_case(client, services, make_user, add_partner)
    supervisor = make_user("supervisor", password=PASSWORD)
    sign_in(client, supervisor.actor.name)
    listing = client.get("/referrals").get_data(as_text=True)
    referral_url = re.search(r'href="(/referrals/[0-9a-f-]{36})"', listing).group(1)  # type: ignore[union-attr]
    page = client.get(referral_url).get_data(as_text=True)
    assert "Routing decisions" in page and "Why this partner" in page
    assert "covers Peshawar" in page  # the routing reason, as stored with the decision
    # An offer nobody accepted yet cannot be closed: no form for it.
    assert not re.search(r'action="/assignments/[0-9a-f-]{36}/close"', page)
    offer = assignments.inbox(services, Actor("sup", Role.SUPERVISOR), status="offered", limit=10, cursor=None)[
        "items"
    ][0]
    assignments.accept(services, AcceptAssignment(offer["id"]), Actor("p", Role.PARTNER, offer["partner_id"]))
    page = client.get(referral_url).get_data(as_text=True)
    assignment_id = re.search(r'action="/assignments/([0-9a-f-]{36})/close"', page).group(1)  # type: ignore[union-attr]
    assert assignment_id == offer["id"]
    resp = client.post(
        f"/assignments/{assignment_id}/close",
        data={
            "csrf_token": csrf_token(client, referral_url),
            "outcome": "referred_elsewhere",
            "referral_id": referral_url.rsplit("/", 1)[1],
        },
    )
    assert resp.headers["Location"] == referral_url
    assert "Referred elsewhere" in client.get(referral_url).get_data(as_text=True)


@pytest.mark.parametrize(
    ("role", "landing"),
    [
        ("supervisor", "/supervision"),
        ("caseworker", "/referrals"),
        ("partner", "/inbox"),
        ("admin", "/deliveries"),
        ("auditor", "/audit"),
        ("analyst", "/reports"),
    ],
)
def test_every_role_lands_on_its_own_page_not_the_plain_start_page(
    client: FlaskClient, make_user: Any, add_partner: Any, role: str, landing: str
) -> None:
    partner_id = add_partner()["id"] if role == "partner" else None
    user = make_user(role, partner_id=partner_id, password=PASSWORD)
    sign_in(client, user.actor.name)
    landed = client.get("/")
    assert landed.status_code == 302 and landed.headers["Location"] == landing
    page = client.get(landing)
    assert page.status_code == 200
    assert "There are no pages for your role on this site." not in page.get_data(as_text=True)
    if role in ("admin", "auditor", "analyst"):
        assert client.get("/referrals/new").status_code == 403
