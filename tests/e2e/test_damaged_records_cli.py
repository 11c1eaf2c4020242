"""Commands with one damaged data key in the database: every one still runs (as an operator runs it).

The instance is made by the real `referral-service init`; one byte of the first wrapped data key
(the one the old start-up check sampled) is flipped in the SQLite file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.app import create_app
from referral_service.bootstrap import bootstrap
from referral_service.crypto.keyring import FileKeyring
from referral_service.db.models import CryptoMeta
from referral_service.services import partners, users
from schemas import PartnerSchema
from tests.conftest import embedded_settings
from tests.e2e.service_process import Service, base_env, cli, request, wait_until
from tests.e2e.test_damaged_records import PEOPLE, SHARE_ALL, first_wrapped_key, flip_byte
from tests.factories import partner, referral_body
from tests.pipeline import drain


@pytest.fixture(scope="module")
def damaged_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("damaged") / "home"
    cli(base_env(home), "init")
    services = bootstrap(embedded_settings(home))
    partners.upsert_partners(services, [PartnerSchema().load(partner())])
    cw = users.create_user(services, name="cw", role="caseworker", partner_id=None, password=None)
    client = create_app(services, {"TESTING": True}).test_client()
    made = []
    for name, cnic, phone in PEOPLE:
        resp = client.post(
            "/api/v1/referrals",
            headers={"Authorization": f"Bearer {cw['token']}"},
            json=referral_body(subject__full_name=name, subject__cnic=cnic, subject__phone=phone, consent=SHARE_ALL),
        )
        assert resp.status_code == 201
        made.append(resp.get_json())
    drain(services)
    key = first_wrapped_key(services)
    flip_byte(services.engine, "subject_keys", "wrapped", key.id)
    services.dispose()
    damaged = next(r for r in made if r["subject_id"] == key.subject_id)
    others = [r for r in made if r is not damaged]
    return {
        "home": home,
        "token": cw["token"],
        "key_id": key.id,
        "kek": key.kek_id,
        "damaged": damaged,
        "others": others,
    }


@pytest.fixture
def instance(damaged_template: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    shutil.copytree(damaged_template["home"], home)
    return {**damaged_template, "home": home, "env": base_env(home)}


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert "does not open its data keys" not in result.stderr


@pytest.mark.parametrize(
    "command", [("init",), ("users", "create", "--role", "admin", "--name", "ops"), ("keys", "status")]
)
def test_commands_start_with_a_damaged_data_key(instance: dict[str, Any], command: tuple[str, ...]) -> None:
    result = cli(instance["env"], *command, check=False)
    _no_traceback(result)
    assert result.returncode == 0, result.stderr


def test_erasing_another_subject_and_the_damaged_one_both_work(instance: dict[str, Any]) -> None:
    env, other, damaged = instance["env"], instance["others"][0], instance["damaged"]
    for subject_id in (other["subject_id"], damaged["subject_id"]):
        result = cli(env, "subjects", "erase", subject_id, "--yes", check=False)
        _no_traceback(result)
        assert result.returncode == 0, result.stderr
        assert f"subject {subject_id} erased" in result.stdout
    # Erased is not damaged: nothing is left to list.
    checked = cli(env, "records", "check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout.splitlines()[-1])["summary"]["damaged"] == 0


def test_records_check_lists_the_damaged_key_and_field_without_anything_personal(instance: dict[str, Any]) -> None:
    home, other = instance["home"], instance["others"][0]
    services = bootstrap(embedded_settings(home))
    flip_byte(services.engine, "referrals", "incident_ct", other["id"])
    services.dispose()

    result = cli(instance["env"], "records", "check", "--batch-size", "2", check=False)
    assert result.returncode == 1, result.stderr
    *lines, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(lines, key=lambda d: d["table"]) == [
        {
            "table": "referrals",
            "row_id": other["id"],
            "column": "incident",
            "subject_id": other["subject_id"],
            "error": "authentication failed: tampered or misplaced ciphertext",
        },
        {
            "table": "subject_keys",
            "row_id": instance["key_id"],
            "column": "wrapped",
            "subject_id": instance["damaged"]["subject_id"],
            "error": "the wrapped data key does not open",
        },
    ]
    assert summary["summary"]["damaged"] == 2
    assert summary["summary"]["checked_keys"] == 3
    assert summary["summary"]["unreadable_fields"] >= 6  # the damaged person's, behind their key
    everything = result.stdout + result.stderr
    for name, cnic, phone in PEOPLE:
        assert name not in everything and cnic not in everything and phone not in everything
    assert "Qissa Khwani" not in everything


def test_keys_rotate_passes_the_damaged_key_over_and_retire_says_why_it_refuses(instance: dict[str, Any]) -> None:
    env, old, key_id = instance["env"], instance["kek"], instance["key_id"]
    rotated = cli(env, "keys", "rotate", "--batch-size", "1", check=False, timeout=60)
    _no_traceback(rotated)
    assert rotated.returncode == 0, rotated.stderr
    new = FileKeyring(instance["home"] / "keyring.json").active_kek_id()
    [done] = [line for line in rotated.stdout.splitlines() if line.startswith("done; ")]
    assert json.loads(done.split("key-encryption key: ", 1)[1]) == {old: 1, new: 2}
    assert key_id in rotated.stderr and "1 damaged data key(s) do not open" in rotated.stderr
    assert _canaries(instance["home"]) == [f"kek_canary:{k}" for k in sorted((old, new))]

    resumed = cli(env, "keys", "rotate", "--resume", check=False, timeout=60)  # must not loop on it
    assert resumed.returncode == 0, resumed.stderr
    assert key_id in resumed.stderr

    refused = cli(env, "keys", "retire", old, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {old} still wraps 1 data key(s), 1 of them damaged: they do not open, so no rotation can move "
        "them (restore them from a backup, or erase their subjects); 'referral-service records check' lists them"
    )

    assert cli(env, "subjects", "erase", instance["damaged"]["subject_id"], "--yes", check=False).returncode == 0
    retired = cli(env, "keys", "retire", old, check=False)
    assert retired.returncode == 0, retired.stderr
    assert cli(env, "records", "check", check=False).returncode == 0


def test_keys_reindex_skips_the_damaged_subject_and_names_it(instance: dict[str, Any]) -> None:
    result = cli(instance["env"], "keys", "reindex", check=False, timeout=60)
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "blind index version 2 is active" in result.stdout
    assert "1 subject(s) skipped, damaged" in result.stderr and instance["damaged"]["subject_id"] in result.stderr


def test_run_starts_and_serves_the_list_with_the_damaged_one_marked(instance: dict[str, Any]) -> None:
    service = Service(instance["env"], "run", "--port", "0")
    try:
        port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: request("GET", f"{base}/readyz")[0] == 200, what="/readyz")
        status, body = request("GET", f"{base}/api/v1/referrals", token=instance["token"])
        assert status == 200
        marked = {item["id"]: item["subject"]["damaged"] for item in body["items"]}
        assert marked == {instance["damaged"]["id"]: True, **{r["id"]: False for r in instance["others"]}}
    finally:
        assert service.terminate() == 0, service.output[-2000:]


def test_a_wrong_keyring_still_stops_start_up_in_one_line(instance: dict[str, Any]) -> None:
    path = instance["home"] / "keyring.json"
    data = json.loads(path.read_text())
    data["keks"][data["active"]]["key"] = "A" * 43 + "="  # other 32 bytes under the same id
    path.write_text(json.dumps(data))
    result = cli(instance["env"], "run", "--port", "0", check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: REFERRAL_KEYRING: key-encryption key {data['active']} does not open its data keys (wrong keyring?)"
    ]


def _canaries(home: Path) -> list[str]:
    services = bootstrap(embedded_settings(home))
    with services.uow() as uow:
        names = uow.session.scalars(
            select(CryptoMeta.name).where(CryptoMeta.name.startswith("kek_canary:")).order_by(CryptoMeta.name)
        ).all()
    services.dispose()
    return list(names)


def test_init_wrote_a_canary_for_the_kek_that_wraps_the_keys(instance: dict[str, Any]) -> None:
    assert _canaries(instance["home"]) == [f"kek_canary:{instance['kek']}"]
