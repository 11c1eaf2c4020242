"""A stolen SQLite file (with its WAL) and the logs hold none of the personal data that went in."""

from __future__ import annotations

import base64
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.bootstrap import Services
from referral_service.db.models import AuditEntry
from referral_service.services.audit import integrate_all
from tests.factories import referral_body
from tests.leaks import CANARY, MARKERS, all_needles, find_leaks, marked_referral
from tests.pipeline import InProcessPipeline


def test_needle_forms_find_what_they_should() -> None:
    secret = MARKERS["full_name"]
    for blob in (
        b"..." + secret.upper().encode() + b"...",
        b"x" + base64.b64encode(b"ab" + secret.encode()) + b"y",
        secret.lower().encode("utf-16-le"),
    ):
        assert find_leaks(blob, [secret])
    assert find_leaks(b"nothing personal here", all_needles()) == []


def submit_marked_referrals(client: Any, cw_headers: dict[str, str]) -> list[dict[str, Any]]:
    marked = marked_referral()
    first = client.post("/api/v1/referrals", json=marked, headers=cw_headers)
    assert first.status_code == 201, first.get_json()
    # The same person again, CNIC without dashes and phone in local form: the duplicate path (a subject of
    # its own, and a possible duplicate for supervisors).
    again = referral_body(
        subject__full_name=MARKERS["full_name"],
        subject__cnic="6110198765437",
        subject__phone="03219876543",
        incident__narrative=MARKERS["narrative"],
    )
    second = client.post("/api/v1/referrals", json=again, headers=cw_headers)
    assert second.status_code == 201, second.get_json()
    assert second.get_json()["subject_id"] != first.get_json()["subject_id"]
    assert second.get_json()["warnings"][0]["matched_on"] == ["cnic", "phone"]
    return [first.get_json(), second.get_json()]


def add_marked_followup(
    services: Services, client: Any, referral_id: str, cw_headers: dict[str, str], partner_headers: Any
) -> None:
    pipeline = InProcessPipeline(services)
    pipeline.drain()
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=cw_headers).get_json()
    assert shown["subject"]["full_name"] == MARKERS["full_name"]  # the data is there, just not readable at rest
    [assignment] = shown["assignments"]
    headers = partner_headers(assignment["partner_id"])
    assert client.post(f"/api/v1/assignments/{assignment['id']}/accept", headers=headers).status_code == 200
    note = client.post(
        f"/api/v1/assignments/{assignment['id']}/followups",
        headers=headers,
        json={"outcome": "contacted", "note": MARKERS["note"]},
    )
    assert note.status_code in (200, 201), note.get_json()
    pipeline.drain()
    pipeline.close()


def _read_home(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_no_marker_in_any_form_in_the_sqlite_files_or_logs(
    services: Services, client: Any, make_user: Any, add_partner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_partner(name=CANARY)  # not personal, stored in the clear: proves the scan sees plain text
    cw = make_user("caseworker")
    first, second = submit_marked_referrals(client, cw.headers)
    # A supervisor reads the duplicates queue (names revealed): its access log lines are scanned too.
    queue = client.get("/api/v1/duplicates", headers=make_user("supervisor").headers).get_json()["items"]
    assert [(d["referral_id"], d["earlier_referral_id"]) for d in queue] == [(second["id"], first["id"])]
    add_marked_followup(
        services,
        client,
        first["id"],
        cw.headers,
        lambda partner_id: make_user("partner", partner_id=partner_id).headers,
    )

    home = services.settings.home
    before_checkpoint = _read_home(home)
    assert any(p.name.endswith("-wal") for p in home.iterdir())
    services.engine.dispose()  # close pooled connections, so the checkpoint can move every page
    database = services.engine.url.database
    assert database
    with closing(sqlite3.connect(database)) as conn:
        busy, _, moved = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0 and moved >= 0
        assert conn.execute("select count(*) from subjects").fetchone() == (2,)
    after_checkpoint = _read_home(home)
    assert len(after_checkpoint) > 50_000  # we really read a database

    assert find_leaks(after_checkpoint, [CANARY])
    assert find_leaks(before_checkpoint, all_needles()) == []
    assert find_leaks(after_checkpoint, all_needles()) == []
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert find_leaks(logged, all_needles()) == []
    # The audit log is in the files: every read of the marked people is in it, sealed, and once
    # integrated its tree and checkpoints too.
    with services.uow() as uow:
        about_subjects = uow.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.subject_bi.is_not(None))
        )
    assert about_subjects is not None and about_subjects >= 2
    assert integrate_all(services) > 0
    services.engine.dispose()
    assert find_leaks(_read_home(home), all_needles()) == []
