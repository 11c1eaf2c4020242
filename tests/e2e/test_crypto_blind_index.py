"""Duplicate detection through the API (possible duplicates, never a shared subject), and re-keying the
blind indexes while it keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from sqlalchemy import delete, func, select

from referral_service.bootstrap import Services
from referral_service.db.models import BlindIndex, CryptoMeta
from referral_service.services import keys
from tests.factories import referral_body

CLI = [sys.executable, "-m", "referral_service"]


def _cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_HOME"] = str(services.settings.home)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _submit(client: Any, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def _person(n: int) -> dict[str, Any]:
    return {
        "subject__full_name": f"Person {n}",
        "subject__cnic": f"42101-{n:07d}-3",
        "subject__phone": f"+92333{n:07d}",
    }


def _earlier(body: dict[str, Any]) -> list[str]:
    """The earlier referrals an intake answer says it matched (only ever the submitter's own, or all for
    supervisors)."""
    return [ref for w in body["warnings"] if w["code"] == "possible_repeat_referral" for ref in w["earlier_references"]]


def test_same_cnic_in_another_format_is_found_and_kept_as_its_own_subject_with_a_warning(
    client: Any, make_user: Any
) -> None:
    cw = make_user("caseworker")
    first = _submit(client, cw.headers, subject__cnic="17301-1234567-2", subject__phone=None)
    assert first["warnings"] == []
    second = _submit(
        client, cw.headers, subject__cnic="1730112345672", subject__phone=None, subject__full_name="Z. Khattak"
    )
    assert second["subject_id"] != first["subject_id"]
    [warning] = second["warnings"]
    assert warning["code"] == "possible_repeat_referral" and warning["matched_on"] == ["cnic"]
    assert warning["earlier_references"] == [first["reference"]]
    assert "1234567" not in str(warning)  # the warning names the field, never the value
    shown = client.get(f"/api/v1/referrals/{second['id']}", headers=cw.headers).get_json()
    assert shown["subject"]["full_name"] == "Z. Khattak" and "linked_existing_subject" not in shown


def test_same_phone_in_local_or_00_form_is_found(client: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    first = _submit(client, cw.headers, subject__cnic=None, subject__phone="+923001234567")
    for form in ("03001234567", "0092 300 1234567"):
        again = _submit(client, cw.headers, subject__cnic=None, subject__phone=form)
        assert again["subject_id"] != first["subject_id"]
        assert again["warnings"][0]["matched_on"] == ["phone"]
        assert first["reference"] in _earlier(again)


def test_different_people_are_not_linked(client: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    subjects = {_submit(client, cw.headers, **_person(n))["subject_id"] for n in range(30)}
    assert len(subjects) == 30


def _index_rows(services: Services) -> dict[int, int]:
    with services.uow() as uow:
        rows = uow.session.execute(select(BlindIndex.version, func.count()).group_by(BlindIndex.version)).all()
    return {int(v): int(n) for v, n in rows}


def _meta(services: Services, name: str) -> str | None:
    with services.uow() as uow:
        row = uow.session.get(CryptoMeta, name)
        return row.value if row else None


def test_reindex_keeps_duplicate_detection_working_before_during_and_after(
    services: Services, client: Any, make_user: Any
) -> None:
    cw = make_user("caseworker")
    people = [_submit(client, cw.headers, **_person(n)) for n in range(12)]
    assert _index_rows(services) == {1: 24}
    plan = keys.begin_reindex(services)
    assert (plan.old, plan.new, plan.remaining) == (1, 2, 12)
    assert keys.reindex_batch(services, 5) == 5  # a third of the way: most subjects have v1 only
    # Mid-transition: a subject indexed only under v1 is still found; the repeat and a newcomer are
    # subjects of their own with both versions.
    assert _earlier(_submit(client, cw.headers, **_person(11))) == [people[11]["reference"]]
    newcomer = _submit(client, cw.headers, **_person(99))
    assert _index_rows(services) == {1: 28, 2: 14}
    # A writer that had not seen the transition: its subject has v1 rows only, behind the cursor.
    with services.uow() as uow:
        uow.session.execute(
            delete(BlindIndex).where(BlindIndex.subject_id == newcomer["subject_id"], BlindIndex.version == 2)
        )
        uow.commit()

    done = _cli(services, "keys", "reindex", "--batch-size", "4")  # resumes from the cursor
    assert done.returncode == 0, done.stderr
    assert "version 1 -> 2" in done.stdout and "version 2 is active" in done.stdout
    assert _index_rows(services) == {2: 28}
    assert _meta(services, "blind_index_version") == "2"
    assert _meta(services, "blind_index_next") is None

    for n, person in [*enumerate(people), (99, newcomer)]:
        again = _submit(client, cw.headers, **_person(n))
        assert person["reference"] in _earlier(again), n
    status = _cli(services, "keys", "status")
    assert '"blind_index_versions": [2]' in status.stdout


def test_reindex_from_the_command_line_then_again_rekeys_each_time(
    services: Services, client: Any, make_user: Any
) -> None:
    cw = make_user("caseworker")
    first = _submit(client, cw.headers, **_person(1))
    with services.uow() as uow:
        before = set(uow.session.scalars(select(BlindIndex.value)))
    for version in (2, 3):
        result = _cli(services, "keys", "reindex")
        assert result.returncode == 0, result.stderr
        assert f"version {version} is active" in result.stdout
    with services.uow() as uow:
        after = set(uow.session.scalars(select(BlindIndex.value)))
    assert _index_rows(services) == {3: 2}
    assert before != after  # new keys, new values
    assert _earlier(_submit(client, cw.headers, **_person(1))) == [first["reference"]]
