"""The caseworker's and supervisor's own actions on the referral page: withdraw consent, withdraw, re-open."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from referral_service.db.models import Assignment, CaseNote, Referral, Subject
from referral_service.domain.model import Actor, Role
from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in, submit, valid_form
from tests.pipeline import drain

NOTE = "Zarmeena phoned: her brother forbids contact"
ACTIONS = ("consent/withdraw", "withdraw", "reopen")


def _route(services: Any) -> None:
    drain(services)


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker", password=PASSWORD)


@pytest.fixture
def offered(client: FlaskClient, services: Any, caseworker: Any, add_partner: Any) -> str:
    """A consented referral by `caseworker`, offered to a partner; the caseworker is signed in. Its page's path."""
    add_partner()
    sign_in(client, caseworker.actor.name)
    url: str = submit(client, valid_form()).headers["Location"]
    client.get(url)  # consume the "submitted" flash
    _route(services)
    assert _state(services, url)["assignments"] == ["offered"]
    return url


def _rid(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _state(services: Any, url: str) -> dict[str, Any]:
    with services.uow() as uow:
        referral = uow.session.get(Referral, _rid(url))
        assert referral is not None
        rows = uow.session.scalars(
            select(Assignment).where(Assignment.referral_id == referral.id).order_by(Assignment.offered_at)
        ).all()
        return {
            "status": referral.status,
            "consent_withdrawn_at": referral.consent_withdrawn_at,
            "assignments": [a.status for a in rows],
        }


def _notes(services: Any, url: str) -> list[tuple[str, bytes | None, str | None]]:
    """(kind, stored ciphertext, the note opened through the vault) of each case note, oldest first."""
    supervisor = Actor("sup", Role.SUPERVISOR)
    with services.uow() as uow:
        referral = uow.session.get(Referral, _rid(url))
        assert referral is not None
        subject = uow.session.get(Subject, referral.subject_id)
        assert subject is not None
        rows = uow.session.scalars(
            select(CaseNote).where(CaseNote.referral_id == referral.id).order_by(CaseNote.created_at)
        ).all()
        notes = [
            (
                n.kind,
                n.note_ct,
                services.vault.reveal_field(
                    uow.session,
                    subject,
                    "case_notes",
                    "note",
                    n.id,
                    n.note_ct,
                    actor=supervisor,
                    referral_id=referral.id,
                ),
            )
            for n in rows
        ]
        uow.commit()  # the reveals are audited
        return notes


def _post(client: FlaskClient, url: str, action: str, **form: str) -> Any:
    return client.post(f"{url}/{action}", data={"csrf_token": csrf_token(client, url), **form})


def _assert_sealed(ciphertext: bytes | None, note: str) -> None:
    assert ciphertext is not None
    assert note.encode() not in ciphertext and b"Zarmeena" not in ciphertext


def test_caseworker_withdraws_consent_offers_are_pulled_back_and_the_note_is_sealed(
    client: FlaskClient, services: Any, offered: str
) -> None:
    page = client.get(offered).get_data(as_text=True)
    assert f'action="{offered}/consent/withdraw"' in page and f'action="{offered}/withdraw"' in page
    assert f'action="{offered}/reopen"' not in page

    resp = _post(client, offered, "consent/withdraw", note=NOTE, confirm="yes")
    assert resp.status_code == 302 and resp.headers["Location"] == offered
    after = client.get(offered).get_data(as_text=True)
    assert "Consent withdrawn. Open offers were pulled back" in after
    assert "partners no longer see this referral" in after
    # consent cannot come back, so nothing is left to withdraw or re-open
    assert not any(f'action="{offered}/{action}"' in after for action in ACTIONS)

    state = _state(services, offered)
    assert state["status"] == "withdrawn" and state["consent_withdrawn_at"] is not None
    assert state["assignments"] == ["withdrawn"]
    [(kind, ciphertext, opened)] = _notes(services, offered)
    assert kind == "consent_withdrawn" and opened == NOTE
    _assert_sealed(ciphertext, NOTE)


def test_withdrawing_consent_needs_the_confirm_box_and_keeps_the_note(
    client: FlaskClient, services: Any, offered: str
) -> None:
    resp = _post(client, offered, "consent/withdraw", note=NOTE)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "Please correct the fields marked below." in html
    block = html[html.index('id="withdraw_consent-confirm"') :]
    assert block.index("Tick the box to confirm that the person withdrew consent.") < block.index("</form>")
    assert f"{NOTE}</textarea>" in html
    assert _state(services, offered)["consent_withdrawn_at"] is None
    assert _state(services, offered)["assignments"] == ["offered"]


def test_caseworker_withdraws_and_reopens_the_referral_which_is_routed_again(
    client: FlaskClient, services: Any, offered: str
) -> None:
    resp = _post(client, offered, "withdraw", note="family moved away")
    assert resp.status_code == 302 and resp.headers["Location"] == offered
    page = client.get(offered).get_data(as_text=True)
    assert "The referral was withdrawn. Open offers were pulled back." in page
    assert f'action="{offered}/withdraw"' not in page
    assert f'action="{offered}/reopen"' in page and f'action="{offered}/consent/withdraw"' in page
    assert _state(services, offered) == {
        "status": "withdrawn",
        "consent_withdrawn_at": None,
        "assignments": ["withdrawn"],
    }

    resp = _post(client, offered, "reopen", note="family is back in Peshawar")
    assert resp.status_code == 302 and resp.headers["Location"] == offered
    assert "The referral was re-opened and will be offered to partners again." in client.get(offered).get_data(
        as_text=True
    )
    assert _state(services, offered)["status"] == "submitted"
    _route(services)
    assert _state(services, offered)["assignments"] == ["withdrawn", "offered"]

    notes = _notes(services, offered)
    assert [(kind, opened) for kind, _, opened in notes] == [
        ("withdrawn", "family moved away"),
        ("reopened", "family is back in Peshawar"),
    ]
    for _, ciphertext, opened in notes:
        _assert_sealed(ciphertext, str(opened))


def test_withdrawing_without_a_note_is_allowed(client: FlaskClient, services: Any, offered: str) -> None:
    assert _post(client, offered, "withdraw").status_code == 302
    [(kind, _, opened)] = _notes(services, offered)
    assert kind == "withdrawn" and opened is None


def test_reopen_without_a_note_shows_the_error_next_to_it_and_keeps_values(
    client: FlaskClient, services: Any, offered: str
) -> None:
    _post(client, offered, "withdraw")
    blank = _post(client, offered, "reopen", note="   ")
    html = blank.get_data(as_text=True)
    assert blank.status_code == 422
    block = html[html.index('id="reopen-note"') :]
    assert 'id="reopen-note-error"' in block[: block.index("</form>")]
    assert "This field is required." in block[: block.index("</form>")]
    assert 'aria-invalid="true"' in html[html.index('id="reopen-note"') :][:400]

    too_long = "x" * 2001
    resp = _post(client, offered, "reopen", note=too_long)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "Too long: at most 2000 characters." in html
    assert f">{too_long}</textarea>" in html
    assert _state(services, offered)["status"] == "withdrawn"
    assert [kind for kind, _, _ in _notes(services, offered)] == ["withdrawn"]


def test_another_caseworker_may_not_act_on_the_referral(
    client: FlaskClient, services: Any, offered: str, make_user: Any
) -> None:
    before = _state(services, offered)
    client.post("/logout", data={"csrf_token": csrf_token(client, offered)})
    other = make_user("caseworker", password=PASSWORD)
    sign_in(client, other.actor.name)
    token = csrf_token(client, "/referrals")
    for action, form in (
        ("consent/withdraw", {"confirm": "yes"}),
        ("withdraw", {}),
        ("reopen", {"note": "x"}),
        ("reopen", {}),
    ):
        resp = client.post(f"{offered}/{action}", data={"csrf_token": token, **form})
        html = resp.get_data(as_text=True)
        assert resp.status_code == 403, action
        assert "You may not see or change this." in html
        assert "Zarmeena" not in html
    assert _state(services, offered) == before
    assert _notes(services, offered) == []


def test_partner_sees_no_case_actions_and_posting_them_is_refused(
    client: FlaskClient, services: Any, offered: str, make_user: Any
) -> None:
    client.post("/logout", data={"csrf_token": csrf_token(client, offered)})
    with services.uow() as uow:
        partner_id = uow.session.scalars(
            select(Assignment.partner_id).where(Assignment.referral_id == _rid(offered))
        ).one()
    staff = make_user("partner", partner_id=partner_id, password=PASSWORD)
    sign_in(client, staff.actor.name)
    page = client.get(offered)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="case-actions"' not in html
    assert not any(f'action="{offered}/{action}"' in html for action in ACTIONS)
    token = csrf_token(client, offered)
    for action in ACTIONS:
        resp = client.post(f"{offered}/{action}", data={"csrf_token": token, "note": "x", "confirm": "yes"})
        assert resp.status_code == 403, action
        assert "Your role does not give access to this page." in resp.get_data(as_text=True)
    assert _state(services, offered)["assignments"] == ["offered"]
    assert _notes(services, offered) == []


def test_case_actions_without_a_csrf_token_are_rejected(client: FlaskClient, services: Any, offered: str) -> None:
    before = _state(services, offered)
    for action in ACTIONS:
        resp = client.post(f"{offered}/{action}", data={"note": "x", "confirm": "yes"})
        assert resp.status_code == 400, action
        assert "This form has expired" in resp.get_data(as_text=True)
    assert _state(services, offered) == before
    assert _notes(services, offered) == []


def test_withdrawing_twice_says_it_changed_meanwhile(client: FlaskClient, services: Any, offered: str) -> None:
    token = csrf_token(client, offered)  # two tabs open on the same page
    assert client.post(f"{offered}/withdraw", data={"csrf_token": token}).status_code == 302
    client.get(offered)
    again = client.post(f"{offered}/withdraw", data={"csrf_token": token})
    assert again.status_code == 302 and again.headers["Location"] == offered
    assert "This was changed at the same time by someone else" in client.get(offered).get_data(as_text=True)
    assert [kind for kind, _, _ in _notes(services, offered)] == ["withdrawn"]


def test_referral_without_consent_offers_no_consent_withdrawal_or_reopen(client: FlaskClient, caseworker: Any) -> None:
    sign_in(client, caseworker.actor.name)
    url = submit(client, valid_form(**{"consent.given": "no", "consent.method": "", "consent.share": []})).headers[
        "Location"
    ]
    html = client.get(url).get_data(as_text=True)
    assert f'action="{url}/consent/withdraw"' not in html and f'action="{url}/reopen"' not in html
    assert f'action="{url}/withdraw"' in html


def test_supervisor_reopens_an_unroutable_referral(
    client: FlaskClient, services: Any, caseworker: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    sign_in(client, caseworker.actor.name)
    url = submit(
        client,
        valid_form(
            **{"subject.district": "Quetta", "subject.province": "Balochistan", "subject.cnic": "", "subject.phone": ""}
        ),
    ).headers["Location"]
    client.post("/logout", data={"csrf_token": csrf_token(client, "/referrals")})
    _route(services)
    assert _state(services, url)["status"] == "unroutable"
    supervisor = make_user("supervisor", password=PASSWORD)
    sign_in(client, supervisor.actor.name)
    page = client.get(url).get_data(as_text=True)
    assert f'action="{url}/reopen"' in page and f'action="{url}/withdraw"' in page
    resp = _post(client, url, "reopen", note="a partner now covers Quetta")
    assert resp.status_code == 302 and resp.headers["Location"] == url
    assert _state(services, url)["status"] == "submitted"
    [(kind, ciphertext, opened)] = _notes(services, url)
    assert kind == "reopened" and opened == "a partner now covers Quetta"
    _assert_sealed(ciphertext, "a partner now covers Quetta")


def test_urdu_referral_page_translates_the_case_actions(client: FlaskClient, services: Any, offered: str) -> None:
    html = client.get(f"{offered}?lang=ur").get_data(as_text=True)
    assert '<html lang="ur" dir="rtl">' in html
    for english in (
        "Withdraw consent",
        "Withdraw referral",
        "Actions on this referral",
        "Note (optional)",
        "The person has withdrawn their consent to share this referral.",
    ):
        assert english not in html, english
    for urdu in ("رضامندی واپس لیں", "ریفرل واپس لیں", "اس ریفرل پر کارروائی"):
        assert urdu in html, urdu
    resp = _post(client, offered, "consent/withdraw")
    assert resp.status_code == 422
    assert "Tick the box" not in resp.get_data(as_text=True)
    assert "تصدیق" in resp.get_data(as_text=True)


def test_partner_closes_from_the_page_with_the_services_of_its_assignment(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    from tests.factories import referral_body

    add_partner()
    cw = make_user("caseworker")
    body = referral_body(needs=["medical", "psychosocial"])
    referral_id = client.post("/api/v1/referrals", json=body, headers=cw.headers).get_json()["id"]
    drain(services)
    staff = make_user("partner", partner_id="p-peshawar-medical", password=PASSWORD)
    items = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    medical = next(a for a in items if a["service"] == "medical")
    assert client.post(f"/api/v1/assignments/{medical['id']}/accept", headers=staff.headers).status_code == 200

    sign_in(client, staff.actor.name)
    assert "Which services were delivered?" in client.get(f"/referrals/{referral_id}?lang=en").get_data(as_text=True)
    token = csrf_token(client, f"/referrals/{referral_id}")
    missing = client.post(
        f"/assignments/{medical['id']}/close",
        data={"csrf_token": token, "referral_id": referral_id, "services_delivered": "medical"},
    )
    assert missing.status_code == 422
    assert 'value="medical" checked' in missing.get_data(as_text=True)  # the ticked box stays ticked
    # The form offers only this assignment's service, and claiming another one is refused, with a message.
    assert 'value="psychosocial"' not in missing.get_data(as_text=True)
    refused = client.post(
        f"/assignments/{medical['id']}/close?lang=en",
        data={
            "csrf_token": token,
            "referral_id": referral_id,
            "outcome": "services_delivered",
            "services_delivered": ["medical", "psychosocial"],
        },
    )
    assert refused.status_code == 409
    assert "Only the service offered in this case can be marked as delivered." in refused.get_data(as_text=True)
    with services.uow() as uow:
        still = uow.session.get(Assignment, medical["id"])
        assert still is not None and (still.status, still.services_delivered) == ("accepted", None)
    done = client.post(
        f"/assignments/{medical['id']}/close",
        data={
            "csrf_token": token,
            "referral_id": referral_id,
            "outcome": "services_delivered",
            "services_delivered": ["medical"],
        },
    )
    assert done.status_code == 302
    with services.uow() as uow:
        closed = uow.session.get(Assignment, medical["id"])
        assert closed is not None
        assert (closed.status, closed.services_delivered) == ("closed", ["medical"])


# -- what a partner is told when its follow-up cannot be stored -------------------------------------------
@pytest.mark.parametrize(
    ("happened", "told"),
    [
        ("erased", "This person's data was erased on request, so no new note can be stored."),
        ("damaged", "This person's record is damaged, so nothing new can be stored for them."),
        ("declined", "This was changed at the same time by someone else, or is no longer possible."),
    ],
)
def test_a_partner_is_told_why_its_follow_up_could_not_be_stored(
    client: FlaskClient, services: Any, make_user: Any, add_partner: Any, happened: str, told: str
) -> None:
    from referral_service.services.subjects import erase_subject
    from tests.e2e.test_damaged_records import damage_key_of
    from tests.factories import referral_body

    add_partner()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical", password=PASSWORD)
    submitted = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()
    rid, sid = submitted["id"], submitted["subject_id"]
    drain(services)
    [a] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    assert client.post(f"/api/v1/assignments/{a['id']}/accept", headers=staff.headers).status_code == 200
    sign_in(client, staff.actor.name)
    token = csrf_token(client, f"/referrals/{rid}")
    if happened == "erased":
        erase_subject(services, sid)
    elif happened == "damaged":
        damage_key_of(services, sid)
    else:
        resp = client.post(
            f"/api/v1/assignments/{a['id']}/decline", json={"reason": "no_capacity"}, headers=staff.headers
        )
        assert resp.status_code == 200, resp.get_data(as_text=True)
    resp = client.post(
        f"/assignments/{a['id']}/followup",
        data={"outcome": "contacted", "note": "phoned, visit booked", "referral_id": rid, "csrf_token": token},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    page = client.get(resp.headers["Location"], follow_redirects=True).get_data(as_text=True)
    assert told.replace("'", "&#39;") in page
