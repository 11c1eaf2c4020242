"""The auditors' page /audit: entries with decrypted details, filters, CSV, access reports, verification."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from referral_service.db.models import AuditEntry
from referral_service.services.audit import integrate_all
from referral_service.services.subjects import erase_subject
from schemas.audit import CSV_COLUMNS
from tests.conftest import UserHandle
from tests.e2e.test_web_forms import PASSWORD, sign_in
from tests.factories import referral_body
from tests.pipeline import drain


@dataclass
class Story:
    client: FlaskClient
    services: Any
    caseworker: UserHandle
    other: UserHandle
    supervisor: UserHandle
    auditor: UserHandle
    referral_id: str
    subject_id: str


@pytest.fixture
def story(services: Any, client: FlaskClient, make_user: Any, add_partner: Any) -> Story:
    add_partner()
    cw, other = make_user("caseworker"), make_user("caseworker")
    sup, auditor = make_user("supervisor", password=PASSWORD), make_user("auditor", password=PASSWORD)
    resp = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers)
    assert resp.status_code == 201
    body = resp.get_json()
    drain(services)
    assert client.get(f"/api/v1/referrals/{body['id']}", headers=sup.headers).status_code == 200
    assert client.get(f"/api/v1/referrals/{body['id']}", headers=other.headers).status_code == 403
    integrate_all(services)
    return Story(client, services, cw, other, sup, auditor, body["id"], body["subject_id"])


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr class="audit-row[^"]*" id="entry-[^"]+">(.*?)</tr>', html, re.S)


def test_an_auditor_signs_in_to_the_audit_log_and_sees_allowed_and_refused_reads(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    home = story.client.get("/")  # an auditor's home is the audit log
    assert home.status_code == 302 and home.headers["Location"] == "/audit"
    html = story.client.get("/audit?lang=en").get_data(as_text=True)
    assert '<a href="/audit">Audit log</a>' in html  # in the menu
    rows = _rows(html)
    reads = [r for r in rows if ">referral.read<" in r]
    assert any("Refused" in r and story.other.actor.user_id in r for r in reads)
    assert any(
        "Allowed" in r and story.supervisor.actor.user_id in r and "Fields: Name, Date of birth" in r for r in reads
    )
    assert any(">referral.submit<" in r and "Caseworker" in r for r in rows)
    # The referral and the person link to their access reports.
    assert f'href="/audit/referrals/{story.referral_id}"' in html
    assert f'href="/audit/subjects/{story.subject_id}"' in html
    assert 'href="/audit/export.csv"' in html
    assert "Zarmeena" not in html  # the log says which fields were seen, never their values


def test_filters_narrow_the_table_and_keep_the_export_link_to_the_same_result_set(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    html = story.client.get(
        f"/audit?actor_id={story.other.actor.user_id}&action=referral.read&referral_id={story.referral_id}"
    ).get_data(as_text=True)
    rows = _rows(html)
    assert len(rows) == 1 and "Refused" in rows[0]
    assert (
        f"/audit/export.csv?referral_id={story.referral_id}&amp;actor_id={story.other.actor.user_id}"
        "&amp;action=referral.read" in html
    )
    assert f'value="{story.other.actor.user_id}"' in html  # the form keeps what was asked
    subject_rows = _rows(story.client.get(f"/audit?subject_id={story.subject_id}").get_data(as_text=True))
    assert subject_rows and all(story.subject_id[:8] in r for r in subject_rows)


def test_a_time_range_given_with_an_offset_shows_in_the_boxes_as_utc(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    resp = story.client.get("/audit?since=2026-12-01T15:30:00%2B05:00&until=2026-12-02")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'name="since" value="2026-12-01T10:30:00"' in html
    assert 'name="until" value="2026-12-02T00:00:00"' in html
    assert re.findall(r"href=\"(/audit/export.csv[^\"]*)\"", html) == [
        "/audit/export.csv?since=2026-12-01T10:30:00&amp;until=2026-12-02T00:00:00"
    ]


def test_a_bad_time_range_is_shown_next_to_the_field_in_english_and_urdu(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    resp = story.client.get("/audit?since=2026-12-02T10:00&until=2026-12-01T10:00&lang=en")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "The end of the time range must be after its start." in html and 'aria-invalid="true"' in html
    resp = story.client.get("/audit?since=whenever&lang=ur")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert 'dir="rtl"' in html and "تاریخ اور وقت درج کریں۔" in html


def test_pages_of_entries_follow_one_another(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    seen: list[str] = []
    url = "/audit?action=referral.read"
    for _ in range(3):
        for _ in range(12):  # more entries than a page holds
            story.client.get(f"/api/v1/referrals/{story.referral_id}", headers=story.supervisor.headers)
    html = story.client.get(url).get_data(as_text=True)
    while True:
        seen.extend(re.findall(r'id="entry-([^"]+)"', html))
        older = re.search(r'class="older" href="([^"]+)"', html)
        if older is None:
            break
        html = story.client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert len(seen) == len(set(seen)) == 3 * 12 * 2 + 3  # two entries per read, and the story's three


def test_the_csv_export_from_the_page_is_the_filtered_result_set_and_formula_safe(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    story.client.get("/audit?actor_id=%3Dcmd%7C%27%20%2FC%20calc%27%21A0")  # an auditor's filter with a formula
    resp = story.client.get("/audit/export.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert not [c for row in rows for c in row if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert any("=cmd|" in c for row in rows for c in row)  # kept, inside the details, never at a cell's start
    narrowed = story.client.get(f"/audit/export.csv?referral_id={story.referral_id}&action=referral.read")
    records = list(csv.DictReader(io.StringIO(narrowed.get_data(as_text=True))))
    assert records and {r["referral_id"] for r in records} == {story.referral_id}
    assert {r["outcome"] for r in records} == {"allowed", "denied"}
    assert story.client.get("/audit/export.csv?since=never").status_code == 422


def test_who_accessed_this_record_names_the_people_and_the_refusal(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    html = story.client.get(f"/audit/referrals/{story.referral_id}?lang=en").get_data(as_text=True)
    assert "<h1>Who accessed this record</h1>" in html
    rows = re.findall(r'<tr class="access-row[^"]*">(.*?)</tr>', html, re.S)
    opened = [r for r in rows if story.supervisor.actor.name in r and "Opened the referral" in r]
    assert opened and any("Name, Date of birth, Sex, CNIC, Phone, Address" in r for r in opened)
    assert any(story.other.actor.name in r and "Refused" in r for r in rows)
    assert any(story.caseworker.actor.name in r and "Submitted the referral" in r for r in rows)
    urdu = story.client.get(f"/audit/subjects/{story.subject_id}?lang=ur").get_data(as_text=True)
    assert 'dir="rtl"' in urdu and "کسی فرد کے لیے رسائی کی رپورٹ" in urdu
    assert story.supervisor.actor.name in urdu


def test_verify_box_shows_ok_size_and_head_then_names_the_first_bad_entry(story: Story) -> None:
    sign_in(story.client, story.auditor.actor.name)
    html = story.client.get("/audit").get_data(as_text=True)
    assert "Verify the log now" in html and "Intact" not in html  # verifying is asked for, not done on every page
    html = story.client.get("/audit?verify=1").get_data(as_text=True)
    assert "Intact: every entry gives the root of the signed checkpoint." in html
    size = int(re.search(r'class="verify-size"><bdi dir="ltr">(\d+)<', html).group(1))
    assert size >= 5
    assert f"{story.services.audit.origin}\n{size}\n" in html.replace("&#43;", "+")
    with story.services.uow() as uow:
        row = uow.session.scalars(select(AuditEntry).where(AuditEntry.idx == 2)).one()
        uow.session.execute(update(AuditEntry).where(AuditEntry.id == row.id).values(record_ct=b"\x00" * 40))
        uow.commit()
    html = story.client.get("/audit?verify=1").get_data(as_text=True)
    assert "Verification failed: the log was changed." in html
    assert '<dd class="first-bad"><bdi dir="ltr">#2</bdi>' in html and row.id in html
    damaged = [r for r in re.findall(r'<tr class="audit-row is-damaged"[^>]*>(.*?)</tr>', html, re.S)]
    assert len(damaged) == 1 and "damaged" in damaged[0]


def test_erased_details_are_marked_erased(story: Story) -> None:
    erase_subject(story.services, story.subject_id)
    sign_in(story.client, story.auditor.actor.name)
    html = story.client.get(f"/audit?subject_id={story.subject_id}").get_data(as_text=True)
    erased = re.findall(r'<tr class="audit-row is-erased"[^>]*>(.*?)</tr>', html, re.S)
    assert erased and all('class="status erased">erased<' in r for r in erased)


@pytest.mark.parametrize("path", ["/audit", "/audit/export.csv", "/audit/referrals/x", "/audit/subjects/x"])
def test_only_auditors_open_the_audit_pages(story: Story, make_user: Any, path: str) -> None:
    resp = story.client.get(path)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    sign_in(story.client, story.supervisor.actor.name)
    resp = story.client.get(path)
    assert resp.status_code == 403
    assert "Audit log" not in story.client.get("/supervision").get_data(as_text=True)  # no menu link either
    integrate_all(story.services)
    with story.services.uow() as uow:
        count = len(uow.session.scalars(select(AuditEntry.id)).all())
    assert count > 0
    sign_in(story.client, story.auditor.actor.name)
    refused = [
        r
        for r in _rows(story.client.get(f"/audit?actor_id={story.supervisor.actor.user_id}").get_data(as_text=True))
        if ">audit." in r
    ]
    assert len(refused) == 1 and "Refused" in refused[0]
