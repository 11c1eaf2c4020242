"""No client-chosen text in plaintext at rest: follow-up outcomes are codes (free text goes in the sealed
note), idempotency keys are kept only as keyed digests, and `init` converts what earlier versions stored."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
from hashlib import sha256
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from referral_service.bootstrap import Services, prepare_database
from referral_service.db.models import FollowUp, IdempotencyKey, OutboxMessage, Referral, Subject
from referral_service.domain.model import FOLLOWUP_OUTCOMES, Actor, Role
from referral_service.services.subjects import erase_subject
from tests.e2e.test_web_forms import PASSWORD, csrf_token, sign_in
from tests.factories import referral_body
from tests.pipeline import drain

# What a partner typed into the old free-text outcome box: a name and a place.
FREE_TEXT = "Met Zarmeena at her sister's house in Hayatabad"
NOTE = "She asked for a female doctor"


def _database_bytes(services: Services) -> bytes:
    db = services.settings.home / "referrals.sqlite3"
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def _init(services: Services) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_HOME"] = str(services.settings.home)
    return subprocess.run(
        [sys.executable, "-m", "referral_service", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def accepted(services: Services, client: FlaskClient, make_user: Any, add_partner: Any) -> dict[str, Any]:
    """An accepted assignment and the partner staff (with a web password) holding it."""
    partner_id = add_partner()["id"]
    cw = make_user("caseworker")
    referral = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()
    drain(services)
    staff = make_user("partner", partner_id=partner_id, password=PASSWORD)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    return {"referral": referral, "assignment_id": offer["id"], "staff": staff, "cw": cw}


# -- follow-up outcomes ---------------------------------------------------------------------------------
def test_a_free_text_follow_up_outcome_is_refused(client: FlaskClient, accepted: dict[str, Any]) -> None:
    resp = client.post(
        f"/api/v1/assignments/{accepted['assignment_id']}/followups",
        headers=accepted["staff"].headers,
        json={"outcome": FREE_TEXT, "note": NOTE},
    )
    assert resp.status_code == 422
    assert "outcome" in resp.get_json()["error"]["fields"]
    assert FREE_TEXT not in resp.get_data(as_text=True)


def test_every_outcome_of_the_list_is_recorded_and_announced_as_its_code(
    services: Services, client: FlaskClient, accepted: dict[str, Any]
) -> None:
    for outcome in FOLLOWUP_OUTCOMES:
        resp = client.post(
            f"/api/v1/assignments/{accepted['assignment_id']}/followups",
            headers=accepted["staff"].headers,
            json={"outcome": outcome, "note": NOTE},
        )
        assert resp.status_code == 201, resp.get_json()
    with services.uow() as uow:
        bodies = [
            m.body
            for m in uow.session.scalars(
                select(OutboxMessage).where(OutboxMessage.type == "followup.recorded").order_by(OutboxMessage.id)
            )
        ]
    assert [b["outcome"] for b in bodies] == list(FOLLOWUP_OUTCOMES)
    assert all(NOTE not in json.dumps(b) for b in bodies)


@pytest.mark.parametrize(("lang", "label"), [("en", "Contacted the person"), ("ur", "فرد سے رابطہ ہو گیا")])
def test_the_follow_up_form_offers_the_outcomes_as_a_translated_list(
    client: FlaskClient, accepted: dict[str, Any], lang: str, label: str
) -> None:
    sign_in(client, accepted["staff"].actor.name)
    page = client.get(f"/referrals/{accepted['referral']['id']}?lang={lang}").get_data(as_text=True)
    select_id = f"followup-{accepted['assignment_id']}-outcome"
    assert f'<select id="{select_id}" name="outcome"' in page
    assert f'<option value="contacted">{label}</option>' in page
    assert 'name="outcome" value=' not in page  # no free-text box any more


def test_the_follow_up_form_records_the_chosen_outcome_and_shows_its_label(
    services: Services, client: FlaskClient, accepted: dict[str, Any]
) -> None:
    sign_in(client, accepted["staff"].actor.name)
    detail = f"/referrals/{accepted['referral']['id']}"
    resp = client.post(
        f"/assignments/{accepted['assignment_id']}/followup",
        data={
            "csrf_token": csrf_token(client, detail),
            "referral_id": accepted["referral"]["id"],
            "outcome": "service_started",
            "note": NOTE,
        },
    )
    assert resp.status_code == 302
    assert "Service started" in client.get(detail).get_data(as_text=True)
    bad = client.post(
        f"/assignments/{accepted['assignment_id']}/followup",
        data={
            "csrf_token": csrf_token(client, detail),
            "referral_id": accepted["referral"]["id"],
            "outcome": FREE_TEXT,
        },
    )
    assert bad.status_code == 422
    assert "Choose one of the options." in bad.get_data(as_text=True)


def _plant_old_free_text_outcome(services: Services, client: FlaskClient, accepted: dict[str, Any]) -> str:
    """A follow-up as an earlier version stored it: the outcome in the row and its event, in plaintext."""
    resp = client.post(
        f"/api/v1/assignments/{accepted['assignment_id']}/followups",
        headers=accepted["staff"].headers,
        json={"outcome": "contacted", "note": NOTE},
    )
    followup_id: str = resp.get_json()["id"]
    with services.engine.begin() as conn:
        conn.execute(text("UPDATE followups SET outcome = :o WHERE id = :id"), {"o": FREE_TEXT, "id": followup_id})
        for row_id, body in conn.execute(text("SELECT id, body FROM outbox WHERE type = 'followup.recorded'")).all():
            old = {**json.loads(body), "outcome": FREE_TEXT}
            conn.execute(text("UPDATE outbox SET body = :b WHERE id = :id"), {"b": json.dumps(old), "id": row_id})
    assert FREE_TEXT.encode() in _database_bytes(services)  # the scan below can see it
    return followup_id


def _note(services: Services, followup_id: str) -> tuple[str, str | None]:
    with services.uow() as uow:
        followup = uow.session.get(FollowUp, followup_id)
        assert followup is not None
        referral = uow.session.get(Referral, followup.referral_id)
        assert referral is not None
        subject = uow.session.get(Subject, referral.subject_id)
        assert subject is not None
        note = services.vault.reveal_field(
            uow.session,
            subject,
            "followups",
            "note",
            followup.id,
            followup.note_ct,
            actor=Actor("t", Role.SUPERVISOR),
            referral_id=referral.id,
        )
        outcome = followup.outcome
        uow.commit()  # the reveal is audited
        return outcome, note


def test_init_moves_an_old_free_text_outcome_into_the_sealed_note(
    services: Services, client: FlaskClient, accepted: dict[str, Any]
) -> None:
    followup_id = _plant_old_free_text_outcome(services, client, accepted)

    result = _init(services)
    assert "1 free-text follow-up outcome(s) moved into their sealed notes, 1 outbox event(s) cleaned" in result.stdout
    assert FREE_TEXT not in result.stdout + result.stderr

    assert _note(services, followup_id) == ("other", f"{NOTE}\n\nOutcome: {FREE_TEXT}")
    with services.uow() as uow:
        [event] = uow.session.scalars(select(OutboxMessage.body).where(OutboxMessage.type == "followup.recorded"))
    assert event["outcome"] == "other"
    assert FREE_TEXT.encode() not in _database_bytes(services)

    again = _init(services)  # idempotent: nothing left to convert, the note is not appended twice
    assert "follow-up outcome" not in again.stdout
    assert _note(services, followup_id) == ("other", f"{NOTE}\n\nOutcome: {FREE_TEXT}")

    # The text now lives only under the subject's data key: erasure puts it out of reach with the rest.
    assert not erase_subject(services, accepted["referral"]["subject_id"])
    assert _note(services, followup_id) == ("other", None)
    assert FREE_TEXT.encode() not in _database_bytes(services)


def test_init_drops_the_outcome_text_of_an_already_erased_subject(
    services: Services, client: FlaskClient, accepted: dict[str, Any]
) -> None:
    followup_id = _plant_old_free_text_outcome(services, client, accepted)
    erase_subject(services, accepted["referral"]["subject_id"])
    assert FREE_TEXT.encode() in _database_bytes(services)  # erasure alone left it in plaintext

    prepare_database(services)
    assert _note(services, followup_id) == ("other", None)
    assert FREE_TEXT.encode() not in _database_bytes(services)


# -- idempotency keys -----------------------------------------------------------------------------------
CLIENT_KEY = "retry-Zarmeena-Khattak-2026-03-01"


def test_an_idempotency_key_is_stored_only_as_its_keyed_digest(
    services: Services, client: FlaskClient, make_user: Any
) -> None:
    cw = make_user("caseworker")
    headers = {**cw.headers, "Idempotency-Key": CLIENT_KEY}
    first = client.post("/api/v1/referrals", json=referral_body(), headers=headers)
    again = client.post("/api/v1/referrals", json=referral_body(), headers=headers)
    assert first.status_code == again.status_code == 201 and again.get_json() == first.get_json()

    expected = hmac.new(services.keys.derive_secret("idempotency-key"), CLIENT_KEY.encode(), sha256).hexdigest()
    with services.uow() as uow:
        assert uow.session.scalars(select(IdempotencyKey.key)).all() == [expected]
    assert b"Zarmeena-Khattak" not in _database_bytes(services)


def test_init_deletes_plaintext_idempotency_keys_of_an_earlier_version(
    services: Services, client: FlaskClient, make_user: Any
) -> None:
    cw = make_user("caseworker")
    headers = {**cw.headers, "Idempotency-Key": CLIENT_KEY}
    current = client.post("/api/v1/referrals", json=referral_body(), headers=headers).get_json()
    with services.uow() as uow:
        uow.session.add(
            IdempotencyKey(
                user_id=cw.actor.user_id,
                key="old-Gul-Meena-retry",
                request_mac="x",
                status_code=201,
                response={"id": "old"},
            )
        )
        uow.commit()

    report = prepare_database(services)
    assert report.idempotency_keys_dropped == 1
    assert prepare_database(services).idempotency_keys_dropped == 0
    with services.uow() as uow:
        assert len(uow.session.scalars(select(IdempotencyKey.key)).all()) == 1
    assert b"Gul-Meena" not in _database_bytes(services)
    # The current key still answers its retry.
    assert client.post("/api/v1/referrals", json=referral_body(), headers=headers).get_json() == current
