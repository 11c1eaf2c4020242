"""One damaged row fails alone: the API, the pages and /metrics show it as damaged, the rest serves.

A byte is flipped in the real SQLite database (a data key, or one sealed field), the way a bad disk
sector or a botched restore would; every read goes through the real crypto and Flask client.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, SubjectKey
from referral_service.domain.model import PERSONAL_SUBJECT_FIELDS
from tests.e2e.test_web_forms import PASSWORD, sign_in
from tests.factories import referral_body
from tests.pipeline import drain

PEOPLE = (
    ("Zarmeena Khattak", "17301-1234567-2", "+923001234567"),
    ("Gul Meena", "17301-7654321-8", "+923451112223"),
    ("Shazia Afridi", "17301-5555555-1", "+923339998887"),
)
SHARE_ALL = {"given": True, "method": "written", "share": ["contact", "identity", "incident"]}


def flip_byte(engine: Engine, table: str, column: str, row_id: str, at: int = -1) -> None:
    """Flip one bit of one stored value in place (by default in the last byte: the GCM tag)."""
    with engine.begin() as conn:
        value = conn.execute(text(f"SELECT {column} FROM {table} WHERE id = :id"), {"id": row_id}).scalar_one()  # noqa: S608 - test names only
        raw = bytearray(value)
        raw[at % len(raw)] ^= 0x01
        conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE id = :id"), {"v": bytes(raw), "id": row_id})  # noqa: S608


def first_wrapped_key(services: Services) -> Any:
    """The row the old start-up check sampled: the first wrapped key of the active KEK (id, subject_id, kek_id)."""
    with services.uow() as uow:
        return uow.session.execute(
            select(SubjectKey.id, SubjectKey.subject_id, SubjectKey.kek_id)
            .where(SubjectKey.kek_id == services.keys.active_kek_id(), SubjectKey.wrapped.is_not(None))
            .limit(1)
        ).one()


def damage_key_of(services: Services, subject_id: str) -> str:
    with services.uow() as uow:
        key_id = uow.session.scalars(select(SubjectKey.id).where(SubjectKey.subject_id == subject_id)).one()
    flip_byte(services.engine, "subject_keys", "wrapped", key_id)
    return key_id


@pytest.fixture
def three(services: Services, client: Any, make_user: Any, add_partner: Any) -> dict[str, Any]:
    """Three referrals by one caseworker (with a web password), offered to one partner."""
    add_partner()
    cw = make_user("caseworker", password=PASSWORD)
    made = []
    for name, cnic, phone in PEOPLE:
        resp = client.post(
            "/api/v1/referrals",
            headers=cw.headers,
            json=referral_body(subject__full_name=name, subject__cnic=cnic, subject__phone=phone, consent=SHARE_ALL),
        )
        assert resp.status_code == 201, resp.get_json()
        made.append(resp.get_json())
    drain(services)
    return {"cw": cw, "referrals": made}


def test_the_list_shows_the_other_rows_and_marks_only_the_damaged_one(
    services: Services, client: Any, three: dict[str, Any]
) -> None:
    cw, (a, b, c) = three["cw"], three["referrals"]
    damage_key_of(services, b["subject_id"])

    resp = client.get("/api/v1/referrals", headers=cw.headers)
    assert resp.status_code == 200
    subjects = {item["id"]: item["subject"] for item in resp.get_json()["items"]}
    assert subjects[b["id"]]["damaged"] is True and subjects[b["id"]]["full_name"] is None
    assert subjects[b["id"]]["erased"] is False
    assert subjects[a["id"]] == {
        "full_name": "Zarmeena Khattak",
        "erased": False,
        "damaged": False,
        "district": "Peshawar",
    }
    assert subjects[c["id"]]["full_name"] == "Shazia Afridi" and subjects[c["id"]]["damaged"] is False


def test_a_damaged_referral_reads_200_with_the_marker_for_its_caseworker_and_its_partner(
    services: Services, client: Any, make_user: Any, three: dict[str, Any]
) -> None:
    cw, b = three["cw"], three["referrals"][1]
    damage_key_of(services, b["subject_id"])

    resp = client.get(f"/api/v1/referrals/{b['id']}", headers=cw.headers)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["subject"]["damaged"] is True and body["subject"]["erased"] is False
    assert all(body["subject"][f] is None for f in PERSONAL_SUBJECT_FIELDS)
    assert set(body["subject"]["damaged_fields"]) == set(PERSONAL_SUBJECT_FIELDS)
    assert body["subject"]["district"] == "Peshawar"  # what is not sealed still reads
    assert body["incident"]["damaged"] is True and body["incident"].get("narrative") is None
    [offer] = body["assignments"]

    partner = make_user("partner", partner_id=offer["partner_id"])
    seen = client.get(f"/api/v1/referrals/{b['id']}", headers=partner.headers)
    assert seen.status_code == 200
    assert seen.get_json()["subject"]["damaged"] is True
    inbox = client.get("/api/v1/assignments", headers=partner.headers)
    assert inbox.status_code == 200
    marks = {item["referral_id"]: item["subject_damaged"] for item in inbox.get_json()["items"]}
    assert marks == {r["id"]: r["id"] == b["id"] for r in three["referrals"]}


def test_one_damaged_field_reads_damaged_alone(services: Services, client: Any, three: dict[str, Any]) -> None:
    cw, (a, b, _c) = three["cw"], three["referrals"]
    flip_byte(services.engine, "subjects", "cnic_ct", a["subject_id"])
    flip_byte(services.engine, "referrals", "incident_ct", b["id"])

    body = client.get(f"/api/v1/referrals/{a['id']}", headers=cw.headers).get_json()
    assert body["subject"]["damaged"] is True and body["subject"]["damaged_fields"] == ["cnic"]
    assert body["subject"]["cnic"] is None
    assert body["subject"]["full_name"] == "Zarmeena Khattak" and body["subject"]["phone"] == "+923001234567"
    assert body["incident"]["narrative"] == "Injured at the Qissa Khwani bazaar blast"

    other = client.get(f"/api/v1/referrals/{b['id']}", headers=cw.headers)
    assert other.status_code == 200
    body = other.get_json()
    assert body["incident"] == {"type": None, "damaged": True}
    assert body["subject"]["damaged"] is False and body["subject"]["cnic"] == "17301-7654321-8"


def test_a_damaged_note_reads_null_with_a_flag(
    services: Services, client: Any, make_user: Any, three: dict[str, Any]
) -> None:
    cw, a = three["cw"], three["referrals"][0]
    with services.uow() as uow:
        offer = uow.session.scalars(select(Assignment).where(Assignment.referral_id == a["id"])).one()
        offer_id, partner_id = offer.id, offer.partner_id
    partner = make_user("partner", partner_id=partner_id)
    declined = client.post(
        f"/api/v1/assignments/{offer_id}/decline",
        headers=partner.headers,
        json={"reason": "other", "note": "no female doctor this week"},
    )
    assert declined.status_code == 200, declined.get_json()
    flip_byte(services.engine, "assignments", "note_ct", offer_id)

    resp = client.get(f"/api/v1/referrals/{a['id']}", headers=cw.headers)
    assert resp.status_code == 200
    [shown] = [x for x in resp.get_json()["assignments"] if x["id"] == offer_id]
    assert shown["note"] is None and shown["note_damaged"] is True
    assert resp.get_json()["subject"]["damaged"] is False


def test_nothing_new_is_sealed_into_a_damaged_person_and_it_is_a_409_not_a_500(
    services: Services, client: Any, three: dict[str, Any]
) -> None:
    cw, b = three["cw"], three["referrals"][1]
    damage_key_of(services, b["subject_id"])
    resp = client.post(f"/api/v1/referrals/{b['id']}/withdraw", headers=cw.headers, json={"note": "moved away"})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "damaged_record"
    # Without a note nothing needs the key: withdrawing (or withdrawing consent) still works.
    assert client.post(f"/api/v1/referrals/{b['id']}/consent/withdraw", headers=cw.headers, json={}).status_code == 200


def test_an_intake_whose_cnic_matches_a_damaged_person_is_not_a_500(
    services: Services, client: Any, three: dict[str, Any]
) -> None:
    cw, b = three["cw"], three["referrals"][1]
    damage_key_of(services, b["subject_id"])
    resp = client.post(
        "/api/v1/referrals",
        headers=cw.headers,
        json=referral_body(subject__full_name="Someone Else", subject__cnic=PEOPLE[1][1], subject__phone=None),
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["subject_id"] != b["subject_id"]


@pytest.mark.parametrize(("lang", "marker"), [("en", "damaged"), ("ur", "خراب شدہ")])
def test_the_pages_mark_the_damaged_person_in_english_and_urdu(
    services: Services, app: Any, client: Any, make_user: Any, three: dict[str, Any], lang: str, marker: str
) -> None:
    cw, (a, b, _c) = three["cw"], three["referrals"]
    damage_key_of(services, b["subject_id"])
    mark = f'<em class="status damaged">{marker}</em>'

    assert sign_in(client, cw.actor.name).status_code == 302
    listing = client.get(f"/referrals?lang={lang}")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert html.count(mark) == 1 and "Zarmeena Khattak" in html and "Shazia Afridi" in html

    page = client.get(f"/referrals/{b['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert mark in html and 'class="flash flash-error damaged"' in html
    assert "referral-service records check" in html
    assert mark not in client.get(f"/referrals/{a['id']}").get_data(as_text=True)

    supervisor = make_user("supervisor", password=PASSWORD)
    other = app.test_client()
    assert sign_in(other, supervisor.actor.name).status_code == 302
    inbox = other.get(f"/inbox?lang={lang}")
    assert inbox.status_code == 200 and inbox.get_data(as_text=True).count(mark) == 1
    assert mark in other.get(f"/referrals/{b['id']}").get_data(as_text=True)


def test_supervision_marks_a_damaged_unroutable_referral(services: Services, client: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    made = client.post("/api/v1/referrals", headers=cw.headers, json=referral_body()).get_json()
    drain(services)  # no partner: unroutable
    damage_key_of(services, made["subject_id"])
    supervisor = make_user("supervisor", password=PASSWORD)
    assert sign_in(client, supervisor.actor.name).status_code == 302
    page = client.get("/supervision?lang=ur")
    assert page.status_code == 200
    assert '<em class="status damaged">خراب شدہ</em>' in page.get_data(as_text=True)


def test_each_damaged_read_is_one_log_line_with_ids_only_and_counted_on_metrics(
    services: Services, client: Any, three: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cw, (a, b, _c) = three["cw"], three["referrals"]
    key_id = damage_key_of(services, b["subject_id"])
    flip_byte(services.engine, "subjects", "cnic_ct", a["subject_id"])

    with caplog.at_level(logging.WARNING, logger="referral_service.damage"):
        assert client.get(f"/api/v1/referrals/{b['id']}", headers=cw.headers).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "referral_service.damage"]
    # Six fields and the incident sit behind one key: one line, for the key.
    assert lines == [
        f"damaged record: table=subject_keys column=wrapped row={key_id} subject={b['subject_id']} "
        "reason=the wrapped data key does not open"
    ]
    with caplog.at_level(logging.WARNING, logger="referral_service.damage"):
        assert client.get(f"/api/v1/referrals/{a['id']}", headers=cw.headers).status_code == 200
    logged = caplog.text
    for name, cnic, phone in PEOPLE:
        assert name not in logged and cnic not in logged and phone not in logged

    token = "scrape-" + "t" * 40
    services.settings = dataclasses.replace(services.settings, metrics_token=token)
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert 'damaged_records_total{table="subject_keys"} 1.0' in metrics
    assert 'damaged_records_total{table="subjects"} 1.0' in metrics
    assert 'damaged_records_total{table="referrals"} 0.0' in metrics


def test_the_response_schema_documents_the_damaged_markers(client: Any) -> None:
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    subject = schemas["SubjectView"]["properties"]
    assert subject["damaged"]["type"] == "boolean" and subject["damaged_fields"]["type"] == "array"
    # An assignment as a referral shows it (with notes), and as the inbox lists it.
    assert schemas["AssignmentDetail"]["properties"]["note_damaged"]["type"] == "boolean"
    assert schemas["FollowUpView"]["properties"]["note_damaged"]["type"] == "boolean"
    assert schemas["InboxItem"]["properties"]["subject_damaged"]["type"] == "boolean"
