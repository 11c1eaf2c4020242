"""Crypto-shredding with `referral-service subjects erase`: gone for good, nothing else broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services
from referral_service.crypto import SubjectErased
from referral_service.db.models import BlindIndex, OutboxMessage, Subject, SubjectKey
from referral_service.services.subjects import erase_subject
from tests.factories import referral_body
from tests.pipeline import drain

CLI = [sys.executable, "-m", "referral_service"]
PERSONAL = ("full_name", "date_of_birth", "sex", "cnic", "phone", "address")


def _cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_HOME"] = str(services.settings.home)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def two_subjects(services: Services, client: Any, make_user: Any, add_partner: Any) -> dict[str, Any]:
    add_partner()
    cw = make_user("caseworker")
    share = {"given": True, "method": "written", "share": ["contact", "identity", "incident"]}
    a = client.post("/api/v1/referrals", json=referral_body(consent=share), headers=cw.headers).get_json()
    b = client.post(
        "/api/v1/referrals",
        json=referral_body(
            subject__full_name="Gul Meena", subject__cnic="17301-7654321-8", subject__phone="+923451112223"
        ),
        headers=cw.headers,
    ).get_json()
    drain(services)
    return {"a": a, "b": b, "cw": cw}


def test_erased_subject_reads_as_erased_everywhere_and_others_are_untouched(
    services: Services, client: Any, make_user: Any, two_subjects: dict[str, Any]
) -> None:
    a, b, cw = two_subjects["a"], two_subjects["b"], two_subjects["cw"]
    before = client.get(f"/api/v1/referrals/{a['id']}", headers=cw.headers).get_json()
    assert before["subject"]["full_name"] == "Zarmeena Khattak" and before["subject"]["erased"] is False
    [offer] = before["assignments"]

    result = _cli(services, "subjects", "erase", a["subject_id"], "--yes")
    assert result.returncode == 0, result.stderr
    assert f"subject {a['subject_id']} erased" in result.stdout

    shown = client.get(f"/api/v1/referrals/{a['id']}", headers=cw.headers)
    assert shown.status_code == 200
    body = shown.get_json()
    assert body["subject"]["erased"] is True
    assert all(body["subject"][f] is None for f in PERSONAL)
    assert body["incident"].get("narrative") is None and body["incident"]["erased"] is True
    assert body["subject"]["district"] == "Peshawar"  # coarse routing data stays
    assert body["status"] == before["status"] and len(body["assignments"]) == 1

    partner = make_user("partner", partner_id=offer["partner_id"])
    seen_by_partner = client.get(f"/api/v1/referrals/{a['id']}", headers=partner.headers).get_json()
    assert seen_by_partner["subject"]["erased"] is True and seen_by_partner["subject"]["full_name"] is None

    listed = client.get("/api/v1/referrals", headers=cw.headers).get_json()["items"]
    names = {item["id"]: (item["subject"]["full_name"], item["subject"]["erased"]) for item in listed}
    assert names[a["id"]] == (None, True)
    assert names[b["id"]] == ("Gul Meena", False)

    other = client.get(f"/api/v1/referrals/{b['id']}", headers=cw.headers).get_json()
    assert other["subject"]["erased"] is False
    assert other["subject"]["cnic"] == "17301-7654321-8" and other["subject"]["phone"] == "+923451112223"
    assert other["incident"]["narrative"] == "Injured at the Qissa Khwani bazaar blast"


def test_erasure_destroys_the_key_and_index_rows_and_announces_it(
    services: Services, client: Any, two_subjects: dict[str, Any]
) -> None:
    a, cw = two_subjects["a"], two_subjects["cw"]
    assert _cli(services, "subjects", "erase", a["subject_id"], "--yes").returncode == 0

    with services.uow() as uow:
        keys = uow.session.scalars(select(SubjectKey).where(SubjectKey.subject_id == a["subject_id"])).all()
        assert keys and all(k.wrapped is None and k.kek_id is None and k.destroyed_at for k in keys)
        assert uow.session.scalars(select(BlindIndex).where(BlindIndex.subject_id == a["subject_id"])).all() == []
        subject = uow.session.get(Subject, a["subject_id"])
        assert subject is not None and subject.erased_at is not None
        with pytest.raises(SubjectErased):
            services.vault.data_key(uow.session, subject)
        [event] = uow.session.scalars(select(OutboxMessage).where(OutboxMessage.type == "subject.erased")).all()
        routing_key, body = event.routing_key, event.body
    assert routing_key == "subject.erased"
    assert body["subject_id"] == a["subject_id"] and body["referral_id"] == a["id"]
    assert "Zarmeena" not in json.dumps(body) and "17301" not in json.dumps(body)

    # Duplicate detection no longer leads to the erased person: the same CNIC starts afresh.
    again = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()
    assert again["subject_id"] != a["subject_id"]
    assert again["warnings"] == []


def test_erasing_twice_or_an_unknown_subject_fails_with_one_line(
    services: Services, two_subjects: dict[str, Any]
) -> None:
    subject_id = two_subjects["a"]["subject_id"]
    assert _cli(services, "subjects", "erase", subject_id, "--yes").returncode == 0
    for target, expected in ((subject_id, "already erased"), ("no-such-id", "no such subject")):
        result = _cli(services, "subjects", "erase", target, "--yes")
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert expected in result.stderr and "Traceback" not in result.stderr


def _database_files(services: Services) -> dict[str, bytes]:
    db = services.settings.home / "referrals.sqlite3"
    return {p.name: p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists()}


def test_erasure_leaves_the_old_wrapped_key_in_neither_the_database_file_nor_its_wal(
    services: Services, two_subjects: dict[str, Any]
) -> None:
    a, b = two_subjects["a"], two_subjects["b"]
    with services.uow() as uow:
        [erased_key] = uow.session.scalars(
            select(SubjectKey.wrapped).where(SubjectKey.subject_id == a["subject_id"])
        ).all()
        [kept_key] = uow.session.scalars(
            select(SubjectKey.wrapped).where(SubjectKey.subject_id == b["subject_id"])
        ).all()
    assert erased_key and kept_key
    assert any(erased_key in raw for raw in _database_files(services).values())  # the scan can see it

    # In this process, whose engine stays open as a running service's does: SQLite deletes the WAL
    # itself only when the last connection closes, which on a serving system may be never.
    assert not erase_subject(services, a["subject_id"])  # no warnings
    files = _database_files(services)
    assert "referrals.sqlite3" in files
    still_holding = [name for name, raw in files.items() if erased_key in raw]
    assert still_holding == [], "the erased subject's wrapped key is still in these files"
    assert any(kept_key in raw for raw in files.values())  # the other subject's key is untouched
