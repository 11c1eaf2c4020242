"""The auditors' HTTP API of the audit log, after real actions through the API.

A caseworker submits a referral, a supervisor reads it, another caseworker is refused; the
integrator sequences the entries; then the auditor queries, exports, verifies and checks the
RFC 9162 proofs with the standalone verifier module against the signed checkpoint the API serves.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, update

from referral_service.audit.verifier import (
    Checkpoint,
    VerificationError,
    open_checkpoint,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from referral_service.db.models import AuditEntry
from referral_service.services.audit import integrate_all
from referral_service.services.subjects import erase_subject
from schemas.audit import CSV_COLUMNS
from tests.conftest import FakeClock, UserHandle
from tests.factories import referral_body
from tests.pipeline import drain

MEDICAL = "p-peshawar-medical"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Story:
    client: Any
    services: Any
    caseworker: UserHandle
    other_caseworker: UserHandle
    supervisor: UserHandle
    auditor: UserHandle
    referral_id: str
    subject_id: str

    def audit(self, path: str = "/api/v1/audit", status: int = 200, **params: Any) -> Any:
        resp = self.client.get(path, query_string=params, headers=self.auditor.headers)
        assert resp.status_code == status, resp.get_data(as_text=True)
        return resp.get_json() if resp.is_json else resp.get_data(as_text=True)

    def entries(self, **params: Any) -> list[dict[str, Any]]:
        """Every entry matching `params`, following `next` to the end."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.audit(**params, **({"cursor": cursor} if cursor else {}))
            out.extend(page["items"])
            cursor = page["next"]
            if cursor is None:
                return out

    def checkpoint(self) -> Checkpoint:
        note = self.audit("/api/v1/audit/checkpoint")
        return open_checkpoint(note, self.services.audit.keys.verifier_key)


@pytest.fixture
def story(services: Any, client: Any, make_user: Any, add_partner: Any) -> Story:
    add_partner()
    cw, other, sup = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    auditor = make_user("auditor")
    resp = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers)
    assert resp.status_code == 201, resp.get_json()
    submitted = resp.get_json()
    drain(services)
    assert client.get(f"/api/v1/referrals/{submitted['id']}", headers=sup.headers).status_code == 200
    assert client.get(f"/api/v1/referrals/{submitted['id']}", headers=other.headers).status_code == 403
    assert integrate_all(services) > 0
    return Story(client, services, cw, other, sup, auditor, submitted["id"], submitted["subject_id"])


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# -- what the entries say ------------------------------------------------------------------------------
def test_allowed_and_denied_reads_are_both_in_the_log_with_actor_role_action_outcome_and_position(
    story: Story,
) -> None:
    entries = story.entries(referral_id=story.referral_id)
    reads = [e for e in entries if e["action"] == "referral.read"]
    by_actor = {(e["actor_id"], e["outcome"]): e for e in reads}
    allowed = by_actor[(story.supervisor.actor.user_id, "allowed")]
    denied = by_actor[(story.other_caseworker.actor.user_id, "denied")]
    assert allowed["role"] == "supervisor" and denied["role"] == "caseworker"
    assert {allowed["referral_id"], denied["referral_id"]} == {story.referral_id}
    submit = next(e for e in entries if e["action"] == "referral.submit")
    assert (submit["actor_id"], submit["role"], submit["outcome"]) == (
        story.caseworker.actor.user_id,
        "caseworker",
        "allowed",
    )
    # The auditor's own queries are entries too, not sequenced yet (the integrator has not run since).
    pending = [e for e in entries if e["index"] is None]
    assert pending and {(e["actor_id"], e["action"]) for e in pending} == {(story.auditor.actor.user_id, "audit.read")}
    entries = [e for e in entries if e not in pending]
    for entry in entries:
        assert set(entry) >= {"id", "at", "actor_id", "role", "action", "referral_id", "outcome", "details"}
        assert isinstance(entry["index"], int) and entry["index"] >= 0
        assert len(_b64(entry["leaf_hash"])) == 32
        assert entry["damaged"] is False and entry["details_erased"] is False
    # The supervisor's read is two entries about the person: the policy's decision, and the reveal of
    # personal fields, which names which fields (decrypted for the auditor).
    reads = [
        e
        for e in entries
        if (e["actor_id"], e["action"], e["subject_id"])
        == (story.supervisor.actor.user_id, "referral.read", story.subject_id)
    ]
    [decision] = [e for e in reads if not e["details"]["fields"]]
    [reveal] = [e for e in reads if e["details"]["fields"]]
    assert decision["outcome"] == "allowed"
    assert {"full_name", "cnic", "phone"} <= set(reveal["details"]["fields"])
    incident = next(e for e in entries if e["action"] == "referrals.incident.read")
    assert incident["details"]["fields"] == ["incident"] and incident["role"] == "supervisor"
    # Newest first, and each entry's index is unique.
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)
    assert len({e["index"] for e in entries}) == len(entries)


def test_each_filter_narrows_the_entries_to_what_it_names(story: Story, clock: FakeClock) -> None:
    everything = story.entries()
    by_actor = story.entries(actor_id=story.other_caseworker.actor.user_id)
    assert by_actor and {e["actor_id"] for e in by_actor} == {story.other_caseworker.actor.user_id}
    assert [e["outcome"] for e in by_actor if e["action"] == "referral.read"] == ["denied"]
    by_action = story.entries(action="referral.submit")
    assert [e["actor_id"] for e in by_action] == [story.caseworker.actor.user_id]
    by_subject = story.entries(subject_id=story.subject_id)
    assert by_subject and {e["subject_id"] for e in by_subject} == {story.subject_id}
    by_referral = story.entries(referral_id=story.referral_id)
    assert {e["referral_id"] for e in by_referral} == {story.referral_id}
    assert None in {e["referral_id"] for e in everything}  # the auditor's own unfiltered query
    both = story.entries(referral_id=story.referral_id, actor_id=story.supervisor.actor.user_id)
    assert both and all(e["actor_id"] == story.supervisor.actor.user_id for e in both)

    # A time range: a read an hour later is the only read after the cut.
    clock.advance(hours=1)
    cut = clock.now()
    clock.advance(minutes=1)
    story.client.get(f"/api/v1/referrals/{story.referral_id}", headers=story.supervisor.headers)
    later = story.entries(action="referral.read", since=cut.isoformat())
    # One read is two entries: the policy's decision, and the reveal of the personal fields.
    assert [(e["actor_id"], e["outcome"]) for e in later] == [(story.supervisor.actor.user_id, "allowed")] * 2
    earlier = story.entries(action="referral.read", until=cut.isoformat())
    assert len(earlier) == 3 and all(e["at"] < cut.isoformat() for e in earlier)
    # Without an offset, a time is UTC.
    naive = cut.replace(tzinfo=None).isoformat()
    assert story.entries(action="referral.read", since=naive) == later


def test_pages_follow_one_another_without_gaps_or_repeats(story: Story) -> None:
    everything = story.entries()
    paged: list[str] = []
    page = story.audit(limit=2)
    while True:
        assert len(page["items"]) <= 2
        paged.extend(e["id"] for e in page["items"])
        if page["next"] is None:
            break
        page = story.audit(limit=2, cursor=page["next"])
    # The queries themselves are audited as they go, so later pages may end before newer entries.
    before = {e["id"] for e in everything}
    assert [i for i in paged if i in before] == [e["id"] for e in everything if e["id"] in paged]
    assert {e["id"] for e in everything if e["action"] != "audit.read"} <= set(paged)
    assert len(paged) == len(set(paged))


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T09:00:00Z"},
        {"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T10:00:00Z"},
        {"action": "=cmd|' /C calc'!A0"},
        {"referral_id": "x" * 101},
        {"limit": "0"},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"referal_id": "typo"},
    ],
    ids=lambda p: ",".join(p),
)
def test_bad_filters_are_422_with_the_field_named(story: Story, params: dict[str, str]) -> None:
    body = story.audit(status=422, **params)
    assert body["error"]["code"] == "validation_failed"
    assert set(body["error"]["fields"]) & (set(params) | {"until", "cursor", "_unknown"})
    if "referal_id" in params:  # an unknown filter is not echoed; the likely one is named
        assert "referal_id" not in json.dumps(body)
        assert "did you mean referral_id?" in body["error"]["fields"]["_unknown"][0]


# -- checkpoint and proofs ---------------------------------------------------------------------------------
def test_every_inclusion_proof_from_the_api_verifies_against_the_signed_checkpoint(story: Story) -> None:
    checkpoint = story.checkpoint()
    assert checkpoint.origin == story.services.audit.origin and checkpoint.size >= 5
    leaves = {e["index"]: e["leaf_hash"] for e in story.entries() if e["index"] is not None}
    for index in range(checkpoint.size):
        proof = story.audit("/api/v1/audit/proof/inclusion", index=index, size=checkpoint.size)
        assert (proof["index"], proof["size"]) == (index, checkpoint.size)
        assert proof["leaf_hash"] == leaves[index]
        verify_inclusion(
            index, checkpoint.size, _b64(proof["leaf_hash"]), [_b64(h) for h in proof["hashes"]], checkpoint.root_hash
        )


def test_a_consistency_proof_between_two_checkpoints_verifies(story: Story) -> None:
    old = story.checkpoint()
    for _ in range(3):
        story.client.get(f"/api/v1/referrals/{story.referral_id}", headers=story.supervisor.headers)
    integrate_all(story.services)
    new = story.checkpoint()
    assert new.size > old.size
    proof = story.audit("/api/v1/audit/proof/consistency", first=old.size, second=new.size)
    assert (proof["first"], proof["second"]) == (old.size, new.size)
    verify_consistency(old.size, new.size, [_b64(h) for h in proof["hashes"]], old.root_hash, new.root_hash)
    # Every earlier size is consistent with today's tree too: the root of each earlier tree comes
    # from the inclusion proof of its last entry, and today's signed root from the checkpoint.
    for first in range(1, new.size + 1):
        last = story.audit("/api/v1/audit/proof/inclusion", index=first - 1, size=first)
        root = root_from_inclusion_proof(first - 1, first, _b64(last["leaf_hash"]), [_b64(h) for h in last["hashes"]])
        if first == old.size:
            assert root == old.root_hash
        served = story.audit("/api/v1/audit/proof/consistency", first=first, second=new.size)
        verify_consistency(first, new.size, [_b64(h) for h in served["hashes"]], root, new.root_hash)


def _flips(hashes: list[bytes]) -> list[list[bytes]]:
    """Every proof with one byte of one hash changed."""
    out = []
    for i, value in enumerate(hashes):
        for position in range(len(value)):
            changed = bytearray(value)
            changed[position] ^= 0x01
            out.append([*hashes[:i], bytes(changed), *hashes[i + 1 :]])
    return out


def test_every_byte_flip_of_an_inclusion_proof_or_its_leaf_is_rejected(story: Story) -> None:
    cp = story.checkpoint()
    index = cp.size // 2
    proof = story.audit("/api/v1/audit/proof/inclusion", index=index, size=cp.size)
    leaf, hashes = _b64(proof["leaf_hash"]), [_b64(h) for h in proof["hashes"]]
    verify_inclusion(index, cp.size, leaf, hashes, cp.root_hash)
    assert len(hashes) >= 2
    tampered = _flips(hashes)
    assert len(tampered) == 32 * len(hashes)
    for bad in tampered:
        with pytest.raises(VerificationError):
            verify_inclusion(index, cp.size, leaf, bad, cp.root_hash)
    for [bad_leaf] in _flips([leaf]):
        with pytest.raises(VerificationError):
            verify_inclusion(index, cp.size, bad_leaf, hashes, cp.root_hash)
    for bad in (hashes[:-1], [*hashes, hashes[0]], list(reversed(hashes))):
        with pytest.raises(VerificationError):
            verify_inclusion(index, cp.size, leaf, bad, cp.root_hash)
    with pytest.raises(VerificationError):
        verify_inclusion(index + 1, cp.size, leaf, hashes, cp.root_hash)


def test_every_byte_flip_of_a_consistency_proof_is_rejected(story: Story) -> None:
    old = story.checkpoint()
    for _ in range(5):
        story.client.get(f"/api/v1/referrals/{story.referral_id}", headers=story.supervisor.headers)
    integrate_all(story.services)
    new = story.checkpoint()
    proof = story.audit("/api/v1/audit/proof/consistency", first=old.size, second=new.size)
    hashes = [_b64(h) for h in proof["hashes"]]
    verify_consistency(old.size, new.size, hashes, old.root_hash, new.root_hash)
    assert len(hashes) >= 2
    for bad in _flips(hashes):
        with pytest.raises(VerificationError):
            verify_consistency(old.size, new.size, bad, old.root_hash, new.root_hash)
    for bad in (hashes[:-1], [*hashes, hashes[0]]):
        with pytest.raises(VerificationError):
            verify_consistency(old.size, new.size, bad, old.root_hash, new.root_hash)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("inclusion", {"index": "{size}", "size": "{size}"}, 404),
        ("inclusion", {"index": "0", "size": "{beyond}"}, 404),
        ("inclusion", {"index": "0", "size": "0"}, 422),
        ("inclusion", {"index": "-1", "size": "{size}"}, 422),
        ("inclusion", {"index": "0"}, 422),
        ("inclusion", {"index": "one", "size": "{size}"}, 422),
        ("inclusion", {"index": "0", "size": "9" * 40}, 422),
        ("inclusion", {"index": "0", "size": "9" * 5000}, 422),
        ("inclusion", {"index": "0", "size": "{size}", "extra": "1"}, 422),
        ("consistency", {"first": "1", "second": "{beyond}"}, 404),
        ("consistency", {"first": "0", "second": "{size}"}, 422),
        ("consistency", {"first": "{size}", "second": "1"}, 422),
        ("consistency", {"second": "{size}"}, 422),
        ("consistency", {"first": "1.5", "second": "{size}"}, 422),
    ],
)
def test_proofs_out_of_range_are_json_errors_never_500(
    story: Story, path: str, params: dict[str, str], status: int
) -> None:
    size = story.checkpoint().size
    given = {k: v.format(size=size, beyond=size + 1) for k, v in params.items()}
    body = story.audit(f"/api/v1/audit/proof/{path}", status=status, **given)
    assert body["error"]["code"] == ("not_found" if status == 404 else "validation_failed")
    assert body["error"]["message"]


def test_the_checkpoint_is_a_signed_note_served_as_text(story: Story) -> None:
    resp = story.client.get("/api/v1/audit/checkpoint", headers=story.auditor.headers)
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    body, _, signatures = text.partition("\n\n")
    origin, size, root = body.split("\n")
    assert origin == story.services.audit.origin and int(size) > 0 and len(_b64(root)) == 32
    assert signatures.startswith("— ") and signatures.endswith("\n")
    assert story.checkpoint().size == int(size)


# -- verification ---------------------------------------------------------------------------------------
def test_verify_says_ok_with_the_signed_head_and_size(story: Story) -> None:
    report = story.audit("/api/v1/audit/verify")
    checkpoint = story.audit("/api/v1/audit/checkpoint")
    assert report["ok"] is True and report["problem"] is None and report["first_bad"] is None
    assert report["head"] == checkpoint
    assert report["entries"] == report["size"] == story.checkpoint().size
    assert _b64(report["root"]) == story.checkpoint().root_hash


def test_verify_names_the_first_bad_entry_and_the_query_marks_it_damaged(story: Story) -> None:
    size = story.checkpoint().size
    target = size // 2
    with story.services.uow() as uow:
        row = uow.session.scalars(select(AuditEntry).where(AuditEntry.idx == target)).one()
        sealed = bytearray(row.record_ct)
        sealed[-1] ^= 0x01
        uow.session.execute(update(AuditEntry).where(AuditEntry.id == row.id).values(record_ct=bytes(sealed)))
        uow.commit()
    report = story.audit("/api/v1/audit/verify")
    assert report["ok"] is False and report["first_bad"] == target and report["first_bad_id"] == row.id
    assert report["problem"]
    [shown] = [e for e in story.entries() if e["id"] == row.id]
    assert shown["damaged"] is True and shown["actor_id"] is None and shown["index"] == target


def test_after_erasure_the_details_read_as_erased_and_verify_still_passes(story: Story) -> None:
    erase_subject(story.services, story.subject_id)
    integrate_all(story.services)
    about = story.entries(subject_id=story.subject_id)
    sealed_under_subject = [e for e in about if e["details_erased"]]
    assert sealed_under_subject, "entries about the person were sealed under the person's key"
    for entry in sealed_under_subject:
        assert entry["details"] is None and entry["damaged"] is False
        assert entry["actor_id"] is not None  # who and when stays readable; only what was seen is gone
    assert story.audit("/api/v1/audit/verify")["ok"] is True


# -- access reports ---------------------------------------------------------------------------------------
def test_who_accessed_this_referral_names_each_person_role_outcome_and_fields(story: Story) -> None:
    report = story.audit(f"/api/v1/audit/referrals/{story.referral_id}/access")
    assert report["referral_id"] == story.referral_id and report["subject_id"] is None
    rows = {(r["actor_id"], r["action"], r["outcome"]): r for r in report["items"]}
    sup = story.supervisor.actor
    read = rows[(sup.user_id, "referral.read", "allowed")]
    assert read["actor_name"] == sup.name and read["role"] == "supervisor"
    refused = rows[(story.other_caseworker.actor.user_id, "referral.read", "denied")]
    assert refused["actor_name"] == story.other_caseworker.actor.name
    assert any("full_name" in r["fields"] for r in report["items"] if r["actor_id"] == sup.user_id)


def test_a_persons_access_report_lists_every_access_to_their_data(story: Story) -> None:
    report = story.audit(f"/api/v1/audit/subjects/{story.subject_id}/access")
    assert report["subject_id"] == story.subject_id and report["items"]
    actors = {r["actor_id"] for r in report["items"]}
    assert story.supervisor.actor.user_id in actors
    assert all(r["at"] for r in report["items"])
    # Nobody ever touched an unknown person's data: the report shows only this very request.
    [own] = story.audit("/api/v1/audit/subjects/no-such-person/access")["items"]
    assert (own["actor_id"], own["action"]) == (story.auditor.actor.user_id, "audit.read")


# -- CSV export -------------------------------------------------------------------------------------------
def test_the_csv_export_holds_the_result_set_and_no_cell_starts_a_formula(story: Story) -> None:
    # A request id may start with "-" (the header is taken as given when well-formed), and an
    # auditor's filter with a formula is kept in the details of that query's own entry.
    resp = story.client.get(
        f"/api/v1/referrals/{story.referral_id}",
        headers={**story.supervisor.headers, "X-Request-Id": "-cmdcalc-0001"},
    )
    assert resp.status_code == 200
    story.audit(actor_id="=cmd|' /C calc'!A0")
    integrate_all(story.services)
    resp = story.client.get("/api/v1/audit/export.csv", headers=story.auditor.headers)
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert tuple(rows[0]) == CSV_COLUMNS
    cells = [cell for row in rows[1:] for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert "'-cmdcalc-0001" in {r["request_id"] for r in records}
    [query_entry] = [r for r in records if "=cmd|" in r["details"]]
    assert query_entry["action"] == "audit.read" and query_entry["actor_id"] == story.auditor.actor.user_id

    # Filters narrow the export as they narrow the query.
    only = story.client.get(
        "/api/v1/audit/export.csv",
        query_string={"referral_id": story.referral_id, "action": "referral.read"},
        headers=story.auditor.headers,
    )
    narrowed = list(csv.DictReader(io.StringIO(only.get_data(as_text=True))))
    assert narrowed and {(r["referral_id"], r["action"]) for r in narrowed} == {(story.referral_id, "referral.read")}
    assert {r["outcome"] for r in narrowed} == {"allowed", "denied"}
    bad = story.client.get("/api/v1/audit/export.csv?since=soon", headers=story.auditor.headers)
    assert bad.status_code == 422 and bad.get_json()["error"]["fields"] == {"since": ["Not a valid datetime."]}


# -- who may --------------------------------------------------------------------------------------------
AUDITOR_PATHS = (
    "/api/v1/audit",
    "/api/v1/audit/export.csv",
    "/api/v1/audit/verify",
    "/api/v1/audit/checkpoint",
    "/api/v1/audit/proof/inclusion?index=0&size=1",
    "/api/v1/audit/proof/consistency?first=1&second=1",
    "/api/v1/audit/referrals/{referral_id}/access",
    "/api/v1/audit/subjects/{subject_id}/access",
)


def test_non_auditors_are_refused_and_each_refusal_is_itself_in_the_log(
    story: Story, make_user: Any, add_partner: Any
) -> None:
    staff, admin = make_user("partner", partner_id=MEDICAL), make_user("admin")
    others = (story.caseworker, story.supervisor, staff, admin)
    for user in others:
        for path in AUDITOR_PATHS:
            url = path.format(referral_id=story.referral_id, subject_id=story.subject_id)
            resp = story.client.get(url + ("&" if "?" in url else "?") + "since=bad", headers=user.headers)
            assert resp.status_code == 403, (user.actor.role, url, resp.get_data(as_text=True))
            assert resp.get_json()["error"]["code"] == "forbidden"
    integrate_all(story.services)
    for user in others:
        refused = [e for e in story.entries(actor_id=user.actor.user_id) if e["action"].startswith("audit.")]
        assert len(refused) == len(AUDITOR_PATHS), user.actor.role
        assert {e["outcome"] for e in refused} == {"denied"}
        assert {e["role"] for e in refused} == {user.actor.role.value}
        assert {e["action"] for e in refused} == {"audit.read", "audit.export", "audit.verify"}
    resp = story.client.get("/api/v1/audit")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthenticated"


def test_an_auditors_own_queries_are_audited_with_their_filters(story: Story) -> None:
    story.audit(referral_id=story.referral_id, action="referral.read")
    story.audit(f"/api/v1/audit/subjects/{story.subject_id}/access")
    integrate_all(story.services)
    mine = story.entries(actor_id=story.auditor.actor.user_id, action="audit.read")
    filtered = [e for e in mine if e["referral_id"] == story.referral_id]
    assert filtered and filtered[-1]["details"]["action"] == "referral.read"
    assert any(e["subject_id"] == story.subject_id and e["details"].get("report") == "access" for e in mine)


# -- actions that were allowed but could not be done ---------------------------------------------------
def test_an_allowed_action_that_fails_with_a_conflict_is_on_record_as_a_conflict_without_personal_data(
    story: Story, make_user: Any
) -> None:
    staff = make_user("partner", partner_id=MEDICAL)
    client, rid = story.client, story.referral_id
    shown = client.get(f"/api/v1/referrals/{rid}", headers=story.caseworker.headers).get_json()
    [assignment] = shown["assignments"]
    aid = assignment["id"]
    declined = client.post(f"/api/v1/assignments/{aid}/decline", json={"reason": "no_capacity"}, headers=staff.headers)
    assert declined.status_code == 200, declined.get_data(as_text=True)
    # The partner's own assignment, so the policy allows it; the state machine refuses: declined is final.
    late = client.post(f"/api/v1/assignments/{aid}/accept", headers=staff.headers)
    assert late.status_code == 409, late.get_data(as_text=True)
    cw = story.caseworker.headers
    assert client.post(f"/api/v1/referrals/{rid}/withdraw", json={"note": "moved"}, headers=cw).status_code == 200
    again = client.post(f"/api/v1/referrals/{rid}/withdraw", json={"note": "moved again"}, headers=cw)
    assert again.status_code == 409, again.get_data(as_text=True)
    integrate_all(story.services)

    def outcomes(actor: UserHandle, action: str) -> list[dict[str, Any]]:
        return story.entries(actor_id=actor.actor.user_id, action=action)

    [accept] = outcomes(staff, "assignment.accept")
    assert (accept["outcome"], accept["role"], accept["referral_id"]) == ("conflict", "partner", rid)
    assert accept["details"]["conflict"] == "conflict"  # the error code the caller got, nothing of the case
    [decline] = outcomes(staff, "assignment.decline")
    assert decline["outcome"] == "allowed"  # a move that succeeded is recorded once, as allowed
    withdrawals = outcomes(story.caseworker, "referral.withdraw")
    assert sorted(e["outcome"] for e in withdrawals) == ["allowed", "conflict"]
    for entry in (accept, *withdrawals):
        assert set(entry["details"]) <= {"via", "conflict", "fields"} and not entry["details"].get("fields"), entry
        text = json.dumps(entry)
        for personal in ("Zarmeena", "17301", "3001234567", "Hayatabad", "Qissa Khwani", "moved"):
            assert personal not in text, personal
    assert story.audit("/api/v1/audit/verify")["ok"] is True


def test_a_role_refused_before_its_body_is_read_is_on_record_naming_what_it_asked_for(
    story: Story, make_user: Any
) -> None:
    analyst = make_user("analyst")
    client, rid = story.client, story.referral_id
    refused = client.post(f"/api/v1/referrals/{rid}/withdraw", json={"not": "a valid body"}, headers=analyst.headers)
    assert refused.status_code == 403, refused.get_data(as_text=True)
    shown = client.get(f"/api/v1/referrals/{rid}", headers=story.caseworker.headers).get_json()
    aid = shown["assignments"][0]["id"]
    assert client.post(f"/api/v1/assignments/{aid}/decline", json={}, headers=analyst.headers).status_code == 403
    integrate_all(story.services)
    [withdraw] = story.entries(actor_id=analyst.actor.user_id, action="referral.withdraw")
    assert (withdraw["outcome"], withdraw["referral_id"]) == ("denied", rid)
    # An auditor asking who tried to reach this referral finds the refusal too.
    assert any(e["actor_id"] == analyst.actor.user_id for e in story.entries(referral_id=rid))
    [decline] = story.entries(actor_id=analyst.actor.user_id, action="assignment.decline")
    assert decline["outcome"] == "denied" and decline["details"]["assignment_id"] == aid
