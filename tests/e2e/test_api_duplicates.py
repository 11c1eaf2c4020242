"""Repeat CNIC/phone: each referral keeps its own person; a match is a question for supervisors only.

Issue 8 (critical): a match used to attach the new referral to the earlier subject, so caseworker B
read (and wrote into) caseworker A's client, a partner of B's consented referral got the identity of
A's client who had refused consent, and B's answer told B which referrals A's client had.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services, bootstrap
from referral_service.crypto.blind_index import normalise_cnic
from referral_service.db.models import BlindIndex, PossibleDuplicate, Subject, SubjectKey
from referral_service.domain.model import Actor
from tests.conftest import FakeClock, embedded_settings
from tests.factories import DELETE, referral_body
from tests.pipeline import drain

MEDICAL = "p-peshawar-medical"
A_MARKERS = ("Zarmeena", "17301", "Hayatabad", "1990-04-12")  # A's client, as the factory enters her


def submit(client: Any, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def pending(client: Any, supervisor: Any, status: str = "pending") -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/duplicates?status={status}", headers=supervisor.headers)
    assert resp.status_code == 200, resp.get_json()
    items: list[dict[str, Any]] = resp.get_json()["items"]
    return items


def subject_row(services: Services, subject_id: str) -> tuple[Any, ...]:
    with services.uow() as uow:
        s = uow.session.get(Subject, subject_id)
        assert s is not None
        indexes = sorted(
            uow.session.execute(
                select(BlindIndex.column, BlindIndex.version, BlindIndex.value).where(
                    BlindIndex.subject_id == subject_id
                )
            ).all()
        )
        return (
            s.full_name_ct,
            s.date_of_birth_ct,
            s.sex_ct,
            s.cnic_ct,
            s.phone_ct,
            s.address_ct,
            s.key_id,
            tuple(indexes),
        )


# -- each referral keeps its own person ------------------------------------------------------------------
def test_caseworker_entering_only_a_known_phone_reads_back_their_own_client_and_learns_nothing(
    client: Any, make_user: Any
) -> None:
    a, b = make_user("caseworker"), make_user("caseworker")
    first = submit(client, a.headers)
    no_match = submit(
        client,
        b.headers,
        subject__full_name="Someone Else",
        subject__cnic=None,
        subject__phone="+923339998887",
        subject__address=None,
        subject__date_of_birth=None,
    )

    # B knows only the family phone; the name is B's own client's.
    mine = submit(
        client,
        b.headers,
        subject__full_name="Gul Bano",
        subject__cnic=None,
        subject__address=None,
        subject__date_of_birth=None,
    )
    assert mine["subject_id"] != first["subject_id"]
    assert set(mine) == set(no_match) and mine["warnings"] == no_match["warnings"] == []
    assert first["reference"] not in json.dumps(mine)

    shown = client.get(f"/api/v1/referrals/{mine['id']}", headers=b.headers)
    assert shown.status_code == 200
    subject = shown.get_json()["subject"]
    assert subject["full_name"] == "Gul Bano" and subject["phone"] == "+923001234567"
    assert subject["cnic"] is None and subject["address"] is None and subject["date_of_birth"] is None
    for marker in A_MARKERS:
        assert marker not in shown.get_data(as_text=True), marker
    # And A's referral is still A's alone.
    assert client.get(f"/api/v1/referrals/{first['id']}", headers=b.headers).status_code == 403


def test_a_match_writes_nothing_into_the_earlier_subject(services: Services, client: Any, make_user: Any) -> None:
    a, b = make_user("caseworker"), make_user("caseworker")
    first = submit(client, a.headers, subject__phone=None, subject__address=None)
    before = subject_row(services, first["subject_id"])

    b_referral = submit(
        client,
        b.headers,
        subject__full_name="Gul Bano",
        subject__phone="+923214445556",
        subject__address="Another house, Another street",
    )

    assert subject_row(services, first["subject_id"]) == before  # no phone planted, no new index rows
    shown = client.get(f"/api/v1/referrals/{first['id']}", headers=a.headers).get_json()["subject"]
    assert shown["full_name"] == "Zarmeena Khattak" and shown["phone"] is None and shown["address"] is None
    # B's phone is found on B's referral only (a phone planted in A's record would be found there too).
    again = submit(client, make_user("supervisor").headers, subject__cnic=None, subject__phone="+923214445556")
    assert again["warnings"][0]["earlier_references"] == [b_referral["reference"]]


def test_consent_refused_on_the_earlier_referral_never_reaches_the_partner_of_the_later_one(
    services: Services, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    a, b, supervisor = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id=MEDICAL)
    refused = submit(client, a.headers, consent={"given": False})
    later = submit(
        client,
        b.headers,
        subject__full_name="Gul Bano",
        subject__phone="+923214445556",
        subject__address=None,
        subject__date_of_birth=None,
        consent__share=["contact", "identity", "incident"],
    )
    drain(services)

    def partner_view() -> tuple[dict[str, Any], str]:
        resp = client.get(f"/api/v1/referrals/{later['id']}", headers=staff.headers)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json(), resp.get_data(as_text=True)

    def only_what_b_entered() -> None:
        body, text = partner_view()
        subject = body["subject"]
        assert subject["full_name"] == "Gul Bano" and subject["phone"] == "+923214445556"
        assert subject["cnic"] == "17301-1234567-2"  # what B entered, consented on B's referral
        assert subject["address"] is None and subject["date_of_birth"] is None
        assert "linked_referrals" not in body
        for marker in ("Zarmeena", "Hayatabad", "1990-04-12", "3001234567", refused["reference"]):
            assert marker not in text, marker

    only_what_b_entered()
    [dup] = pending(client, supervisor)
    resp = client.post(f"/api/v1/duplicates/{dup['id']}/confirm", headers=supervisor.headers)
    assert resp.status_code == 200, resp.get_json()
    only_what_b_entered()
    assert client.get(f"/api/v1/referrals/{refused['id']}", headers=staff.headers).status_code == 403
    # The earlier referral is still never routed.
    drain(services)
    shown = client.get(f"/api/v1/referrals/{refused['id']}", headers=a.headers).get_json()
    assert shown["assignments"] == []


# -- the supervisors' queue ---------------------------------------------------------------------------
def test_a_possible_duplicate_is_listed_for_supervisors_with_both_sides(client: Any, make_user: Any) -> None:
    a, b, supervisor = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    first = submit(client, a.headers)
    later = submit(
        client,
        b.headers,
        subject__full_name="Gul Bano",
        subject__date_of_birth="1991-02-03",
        subject__district="Mardan",
    )
    [dup] = pending(client, supervisor)
    assert dup["status"] == "pending" and dup["matched_on"] == ["cnic", "phone"]
    assert dup["decided_by"] is None and dup["decided_at"] is None and dup["created_at"]
    assert (dup["referral_id"], dup["earlier_referral_id"]) == (later["id"], first["id"])
    new, old = dup["referral"], dup["earlier_referral"]
    assert (new["id"], new["reference"], new["status"], new["caseworker_id"]) == (
        later["id"],
        later["reference"],
        "submitted",
        b.actor.user_id,
    )
    assert (old["id"], old["reference"], old["caseworker_id"]) == (first["id"], first["reference"], a.actor.user_id)
    assert new["created_at"] and old["created_at"]
    assert new["subject"] == {
        "full_name": "Gul Bano",
        "date_of_birth": "1991-02-03",
        "district": "Mardan",
        "erased": False,
        "damaged": False,
    }
    assert old["subject"] == {
        "full_name": "Zarmeena Khattak",
        "date_of_birth": "1990-04-12",
        "district": "Peshawar",
        "erased": False,
        "damaged": False,
    }
    # Nothing else: no CNIC or phone in the queue.
    assert "17301" not in json.dumps(dup) and "3001234567" not in json.dumps(dup)
    assert pending(client, supervisor, "confirmed") == [] and pending(client, supervisor, "dismissed") == []


@pytest.mark.parametrize("role", ["caseworker", "partner", "auditor", "admin"])
def test_the_duplicates_queue_and_decisions_are_for_supervisors_only(
    services: Services, client: Any, make_user: Any, add_partner: Any, role: str
) -> None:
    add_partner()
    a = make_user("caseworker")
    submit(client, a.headers)
    submit(client, a.headers, subject__full_name="Z. Khattak")
    other = a if role == "caseworker" else make_user(role, partner_id=MEDICAL if role == "partner" else None)
    resp = client.get("/api/v1/duplicates", headers=other.headers)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    [dup] = pending(client, make_user("supervisor"))
    for verb in ("confirm", "dismiss"):
        resp = client.post(f"/api/v1/duplicates/{dup['id']}/{verb}", headers=other.headers)
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
        # Unknown ids too: a non-supervisor cannot probe which ids exist.
        assert client.post(f"/api/v1/duplicates/nope/{verb}", headers=other.headers).status_code == 403
    with services.uow() as uow:
        assert uow.session.scalars(select(PossibleDuplicate.status)).all() == ["pending"]
    assert client.get("/api/v1/duplicates").status_code == 401


def test_confirm_links_the_people_and_dismiss_keeps_them_apart_each_decided_once(
    services: Services, client: Any, make_user: Any, clock: FakeClock
) -> None:
    a, b, supervisor = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    first = submit(client, a.headers)
    clock.advance(minutes=1)
    second = submit(client, b.headers, subject__full_name="Gul Bano")
    clock.advance(minutes=1)
    third = submit(
        client,
        b.headers,
        subject__full_name="Bibi Gul",
        subject__cnic=None,
        subject__phone=None,
        subject__date_of_birth=None,
    )
    assert third["warnings"] == []
    [dup] = pending(client, supervisor)
    # A fourth with the same CNIC gives two more questions (with the first and the second).
    fourth = submit(client, a.headers, subject__full_name="Zarmeena K.", subject__phone=None)
    queue = pending(client, supervisor)
    assert queue[0]["id"] == dup["id"]
    assert sorted(d["earlier_referral_id"] for d in queue[1:]) == sorted([first["id"], second["id"]])

    resp = client.post(f"/api/v1/duplicates/{dup['id']}/confirm", headers=supervisor.headers)
    assert resp.status_code == 200, resp.get_json()
    decided = resp.get_json()
    assert decided["status"] == "confirmed" and decided["decided_by"] == supervisor.actor.user_id
    assert decided["decided_at"] and decided["person_id"]
    with services.uow() as uow:
        people = {s.id: s.person_id for s in uow.session.scalars(select(Subject))}
    assert people[first["subject_id"]] == people[second["subject_id"]] == decided["person_id"]
    assert people[third["subject_id"]] is None and people[fourth["subject_id"]] is None

    for verb in ("confirm", "dismiss"):
        again = client.post(f"/api/v1/duplicates/{dup['id']}/{verb}", json={}, headers=supervisor.headers)
        assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
        unknown = client.post(f"/api/v1/duplicates/no-such-id/{verb}", headers=supervisor.headers)
        assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "not_found"
    assert [d["id"] for d in pending(client, supervisor, "confirmed")] == [dup["id"]]

    # Supervisors see the link on both referrals; the caseworkers do not get it at all.
    for rid, other in ((first["id"], second), (second["id"], first)):
        shown = client.get(f"/api/v1/referrals/{rid}", headers=supervisor.headers).get_json()
        assert shown["linked_referrals"] == [
            {"id": other["id"], "reference": other["reference"], "status": "submitted"}
        ]
    for handle, rid in ((a, first["id"]), (b, second["id"])):
        assert "linked_referrals" not in client.get(f"/api/v1/referrals/{rid}", headers=handle.headers).get_json()
    # The caseworkers' own referrals show their own people still.
    assert (
        client.get(f"/api/v1/referrals/{second['id']}", headers=b.headers).get_json()["subject"]["full_name"]
        == "Gul Bano"
    )

    # Dismissing keeps the fourth apart.
    to_dismiss = [d for d in pending(client, supervisor) if d["referral_id"] == fourth["id"]][0]
    resp = client.post(f"/api/v1/duplicates/{to_dismiss['id']}/dismiss", headers=supervisor.headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "dismissed"
    assert resp.get_json()["person_id"] is None
    assert client.post(f"/api/v1/duplicates/{to_dismiss['id']}/confirm", headers=supervisor.headers).status_code == 409
    assert [d["id"] for d in pending(client, supervisor, "dismissed")] == [to_dismiss["id"]]
    assert (
        client.get(f"/api/v1/referrals/{fourth['id']}", headers=supervisor.headers).get_json()["linked_referrals"] == []
    )


def test_confirming_a_pair_across_two_linked_groups_merges_them_into_one_person(
    services: Services, client: Any, make_user: Any
) -> None:
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    s1 = submit(client, cw.headers, subject__cnic="17301-1234567-2", subject__phone=None)
    s2 = submit(client, cw.headers, subject__cnic="17301-1234567-2", subject__phone="+923001234567")
    s3 = submit(client, cw.headers, subject__cnic="42101-7654321-3", subject__phone="+923001234567")
    s4 = submit(client, cw.headers, subject__cnic="42101-7654321-3", subject__phone=None)
    pairs = {(d["referral_id"], d["earlier_referral_id"]): d["id"] for d in pending(client, supervisor)}
    assert set(pairs) == {(s2["id"], s1["id"]), (s3["id"], s2["id"]), (s4["id"], s3["id"])}

    def confirm(pair: tuple[str, str]) -> str:
        resp = client.post(f"/api/v1/duplicates/{pairs[pair]}/confirm", headers=supervisor.headers)
        assert resp.status_code == 200, resp.get_json()
        person: str = resp.get_json()["person_id"]
        return person

    def person_ids() -> list[str | None]:
        with services.uow() as uow:
            people = {sid: pid for sid, pid in uow.session.execute(select(Subject.id, Subject.person_id))}
        return [people[s["subject_id"]] for s in (s1, s2, s3, s4)]

    g1 = confirm((s2["id"], s1["id"]))
    g2 = confirm((s4["id"], s3["id"]))
    assert g1 != g2 and person_ids() == [g1, g1, g2, g2]
    merged = confirm((s3["id"], s2["id"]))
    assert merged in (g1, g2) and person_ids() == [merged] * 4
    linked = client.get(f"/api/v1/referrals/{s1['id']}", headers=supervisor.headers).get_json()["linked_referrals"]
    assert [r["reference"] for r in linked] == [s2["reference"], s3["reference"], s4["reference"]]


def test_the_queue_is_paginated_oldest_first(client: Any, make_user: Any, clock: FakeClock) -> None:
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    submit(client, cw.headers)
    # Each repeat shares the CNIC with the first and with every repeat before it.
    for n in range(5):
        clock.advance(minutes=1)
        submit(client, cw.headers, subject__full_name=f"Repeat {n}", subject__phone=None)
    everything = pending(client, supervisor)
    seen: list[str] = []
    url = "/api/v1/duplicates?limit=4"
    while url:
        page = client.get(url, headers=supervisor.headers).get_json()
        assert len(page["items"]) <= 4
        seen.extend(d["id"] for d in page["items"])
        url = f"/api/v1/duplicates?limit=4&cursor={page['next']}" if page["next"] else ""
    assert seen == [d["id"] for d in everything] and len(seen) == 1 + 2 + 3 + 4 + 5
    created = [d["created_at"] for d in everything]
    assert created == sorted(created)
    bad = client.get("/api/v1/duplicates?status=maybe", headers=supervisor.headers)
    assert bad.status_code == 422 and "status" in bad.get_json()["error"]["fields"]
    assert client.get("/api/v1/duplicates?cursor=%%%", headers=supervisor.headers).status_code == 422


def test_decision_bodies_must_be_empty_objects_when_sent(client: Any, make_user: Any) -> None:
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    submit(client, cw.headers)
    submit(client, cw.headers)
    [dup] = pending(client, supervisor)
    resp = client.post(f"/api/v1/duplicates/{dup['id']}/dismiss", json={"why": "x"}, headers=supervisor.headers)
    assert resp.status_code == 422
    resp = client.post(
        f"/api/v1/duplicates/{dup['id']}/dismiss",
        data="[]",
        content_type="application/json",
        headers=supervisor.headers,
    )
    assert resp.status_code == 400
    assert [d["id"] for d in pending(client, supervisor)] == [dup["id"]]


def test_an_erased_side_reads_as_erased(services: Services, client: Any, make_user: Any) -> None:
    from referral_service.services import subjects

    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    first = submit(client, cw.headers)
    second = submit(client, cw.headers, subject__full_name="Z. K.")
    subjects.erase_subject(services, first["subject_id"])
    [dup] = pending(client, supervisor)
    assert dup["earlier_referral"]["subject"] == {
        "full_name": None,
        "date_of_birth": None,
        "district": "Peshawar",
        "erased": True,
        "damaged": False,
    }
    # An erased subject is no longer matched at all (its blind indexes are gone).
    assert submit(client, cw.headers, subject__full_name="Z.")["warnings"][0]["earlier_references"] == [
        second["reference"]
    ]


# -- decisions are recorded -----------------------------------------------------------------------------
@dataclass
class Recorder:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Any = (),
        outcome: str = "allowed",
        details: Any = None,
    ) -> None:
        self.entries.append(
            {
                "actor": actor.user_id if actor else None,
                "action": action,
                "referral_id": referral_id,
                "subject_id": subject_id,
                "outcome": outcome,
            }
        )


@pytest.fixture
def recorded(home: Path, clock: FakeClock) -> Iterator[tuple[Services, Any, Recorder]]:
    from referral_service.app import create_app

    recorder = Recorder()
    svc = bootstrap(embedded_settings(home), clock=clock, access=recorder)
    yield svc, create_app(svc, {"TESTING": True}).test_client(), recorder
    svc.dispose()


def test_decisions_and_reads_of_the_queue_go_to_the_access_recorder(recorded: tuple[Services, Any, Recorder]) -> None:
    from referral_service.services import users

    services, client, recorder = recorded
    token = {
        r: {"Authorization": f"Bearer {users.create_user(services, name=r, role=r)['token']}"}
        for r in ("caseworker", "supervisor")
    }
    supervisor_id = users.actor_for_token(services, token["supervisor"]["Authorization"][7:]).user_id
    first = client.post("/api/v1/referrals", json=referral_body(), headers=token["caseworker"]).get_json()
    later = client.post("/api/v1/referrals", json=referral_body(), headers=token["caseworker"]).get_json()
    recorder.entries.clear()
    [dup] = client.get("/api/v1/duplicates", headers=token["supervisor"]).get_json()["items"]
    reads = {(e["action"], e["referral_id"]) for e in recorder.entries}
    assert {("duplicate.read", first["id"]), ("duplicate.read", later["id"])} <= reads
    recorder.entries.clear()
    assert client.post(f"/api/v1/duplicates/{dup['id']}/confirm", headers=token["supervisor"]).status_code == 200
    assert [(e["action"], e["referral_id"], e["actor"], e["outcome"]) for e in recorder.entries] == [
        ("duplicate.confirm", later["id"], supervisor_id, "allowed"),
        ("duplicate.confirm", first["id"], supervisor_id, "allowed"),
    ]
    recorder.entries.clear()
    assert client.post(f"/api/v1/duplicates/{dup['id']}/dismiss", headers=token["caseworker"]).status_code == 403
    assert [(e["action"], e["outcome"]) for e in recorder.entries] == [("duplicate.dismiss", "denied")]


# -- a damaged candidate does not stop intake --------------------------------------------------------------
def _damage_data_key(services: Services, subject_id: str) -> None:
    with services.uow() as uow:
        row = uow.session.scalars(select(SubjectKey).where(SubjectKey.subject_id == subject_id)).one()
        assert row.wrapped is not None
        wrapped = bytearray(row.wrapped)
        wrapped[20] ^= 0x01
        row.wrapped = bytes(wrapped)
        uow.commit()


def _cnic_sharing_the_index_value_of(services: Services, cnic: str) -> str:
    """Another CNIC whose (16-bit, truncated) blind-index value is the same: a different person."""
    indexer = services.matcher.indexer
    target = indexer.index("cnic", cnic)
    for n in range(1, 2_000_000):
        candidate = f"{n:013d}"
        if candidate != normalise_cnic(cnic) and indexer.index("cnic", candidate) == target:
            return f"{candidate[:5]}-{candidate[5:12]}-{candidate[12]}"
    raise AssertionError("no colliding CNIC found")


def test_intake_still_works_when_a_matching_candidates_data_key_is_damaged(
    services: Services, client: Any, make_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cw = make_user("caseworker")
    damaged = submit(client, cw.headers, subject__phone=None)
    healthy = submit(client, cw.headers, subject__phone=None, subject__full_name="Z. Khattak")
    _damage_data_key(services, damaged["subject_id"])
    unrelated_cnic = _cnic_sharing_the_index_value_of(services, "17301-1234567-2")

    caplog.set_level(logging.WARNING)
    unrelated = client.post(
        "/api/v1/referrals",
        headers=cw.headers,
        json=referral_body(subject__cnic=unrelated_cnic, subject__phone=None, subject__full_name="Unrelated Person"),
    )
    assert unrelated.status_code == 201, unrelated.get_json()
    assert unrelated.get_json()["warnings"] == []
    same = client.post("/api/v1/referrals", headers=cw.headers, json=referral_body(subject__phone=None))
    assert same.status_code == 201, same.get_json()
    # The healthy earlier referral is still found; the damaged one is skipped, not guessed at.
    assert same.get_json()["warnings"][0]["earlier_references"] == [healthy["reference"]]
    with services.uow() as uow:
        earlier = uow.session.scalars(
            select(PossibleDuplicate.earlier_referral_id).where(PossibleDuplicate.referral_id == same.get_json()["id"])
        ).all()
    assert earlier == [healthy["id"]]

    skipped = [r for r in caplog.records if "skipped subject" in r.getMessage()]
    assert skipped and all(damaged["subject_id"] in r.getMessage() for r in skipped)
    for record in caplog.records:
        for marker in ("17301", unrelated_cnic[:5], "Zarmeena", "Unrelated"):
            assert marker not in record.getMessage(), record.getMessage()


# -- digits in other scripts ----------------------------------------------------------------------------
URDU_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")  # U+06F0..U+06F9, as Urdu keyboards type them
ARABIC_INDIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # U+0660..U+0669


def test_a_cnic_or_phone_typed_in_urdu_digits_finds_the_duplicate(client: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    first = submit(client, cw.headers)
    by_cnic = submit(client, cw.headers, subject__cnic="17301-1234567-2".translate(URDU_DIGITS), subject__phone=None)
    assert by_cnic["warnings"][0]["matched_on"] == ["cnic"]
    assert by_cnic["warnings"][0]["earlier_references"] == [first["reference"]]
    by_phone = submit(
        client, cw.headers, subject__cnic=DELETE, subject__phone="\u200e+92 300 1234567".translate(ARABIC_INDIC_DIGITS)
    )
    assert by_phone["warnings"][0]["matched_on"] == ["phone"]
    assert first["reference"] in by_phone["warnings"][0]["earlier_references"]
    shown = client.get(f"/api/v1/referrals/{by_cnic['id']}", headers=cw.headers).get_json()["subject"]
    assert shown["cnic"] == "17301-1234567-2"
    # And the other way round: ASCII now finds what was typed in Urdu digits.
    urdu_first = submit(client, cw.headers, subject__cnic="42101-7654321-3".translate(URDU_DIGITS), subject__phone=None)
    again = submit(client, cw.headers, subject__cnic="4210176543213", subject__phone=None)
    assert again["warnings"][0]["earlier_references"] == [urdu_first["reference"]]


def test_a_damaged_side_reads_as_damaged_in_the_queue_and_the_rest_still_lists(
    services: Services, client: Any, make_user: Any
) -> None:
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    first = submit(client, cw.headers)
    submit(client, cw.headers, subject__full_name="Z. K.")
    submit(client, cw.headers, subject__full_name="Zarmeena K.")
    _damage_data_key(services, first["subject_id"])
    resp = client.get("/api/v1/duplicates", headers=supervisor.headers)
    assert resp.status_code == 200, resp.get_json()
    items = resp.get_json()["items"]
    damaged_sides = [d["earlier_referral"]["subject"] for d in items if d["earlier_referral_id"] == first["id"]]
    assert damaged_sides and all(s["damaged"] is True and s["full_name"] is None for s in damaged_sides)
    healthy_sides = [d["referral"]["subject"] for d in items]
    assert {s["full_name"] for s in healthy_sides} == {"Z. K.", "Zarmeena K."}
