"""`referral-service partners import FILE [--dry-run]` with the official HSDS examples, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from referral_service.audit.log import AuditFilter
from referral_service.db.models import Assignment, Partner
from tests.e2e.service_process import base_env, cli
from tests.factories import referral_body
from tests.hsds_fixtures import organization_full, organization_list_page, tabular_folder, write_json
from tests.pipeline import drain

ORG_ID = "d9d5e0f5-d3ce-4f73-9a2f-4dd0ecc6c610"


def _partners(services: Any) -> dict[str, dict[str, Any]]:
    with services.uow() as uow:
        return {
            p.id: {"services": p.services, "districts": p.districts, "capacity": p.capacity}
            for p in uow.session.scalars(select(Partner))
        }


def test_dry_run_prints_the_summary_and_changes_nothing_then_the_import_and_a_rerun(
    home: Path, services: Any, tmp_path: Path
) -> None:
    page = {**organization_list_page(), "contents": [organization_full(), *organization_list_page()["contents"]]}
    file = write_json(tmp_path / "page.json", page)
    env = base_env(home)

    dry = cli(env, "partners", "import", str(file), "--dry-run")
    assert dry.stdout.splitlines() == [
        f"new        {ORG_ID}  Example Organization Inc.",
        "skipped    -  Example Organization Inc.: no service maps onto the network's service types",
        "1 new, 0 updated, 0 unchanged, 1 skipped; dry run: nothing was changed",
    ]
    assert _partners(services) == {}

    real = cli(env, "partners", "import", str(file))
    assert real.stdout.splitlines()[0] == dry.stdout.splitlines()[0]
    assert (
        real.stdout.splitlines()[-1]
        == "1 new, 0 updated, 0 unchanged, 1 skipped; imported 1 partner(s) in one transaction"
    )
    assert _partners(services) == {ORG_ID: {"services": ["psychosocial"], "districts": ["Peshawar"], "capacity": 10}}

    again = cli(env, "partners", "import", str(file))
    assert again.stdout.splitlines()[0] == f"unchanged  {ORG_ID}  Example Organization Inc."
    assert again.stdout.splitlines()[-1].startswith("0 new, 0 updated, 1 unchanged, 1 skipped")
    # The two imports are on record (the dry run changed nothing and is not), each by the operator.
    with services.uow() as uow:
        rows = services.audit.query(uow.session, AuditFilter(action="partner.import"), limit=10)
        entries = [services.audit.open_entry(uow.session, row) for row in rows]
    assert [(e.record["actor_id"].startswith("os:"), e.details["partners"]) for e in entries] == [(True, "1")] * 2


def test_the_tabular_datapackage_imports_from_the_command_line(home: Path, services: Any, tmp_path: Path) -> None:
    result = cli(base_env(home), "partners", "import", str(tabular_folder(tmp_path / "csv")))
    assert result.stdout.splitlines()[0] == f"new        {ORG_ID}  Example Organization Inc."
    assert list(_partners(services)) == [ORG_ID]


def test_a_malformed_file_is_one_line_exit_2_and_changes_nothing(home: Path, services: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"contents": [')
    result = cli(base_env(home), "partners", "import", str(bad), check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {bad} is not valid JSON (line 1)"]
    assert _partners(services) == {}


def test_an_organization_whose_services_is_not_a_list_is_skipped_with_the_reason_not_a_traceback(
    home: Path, services: Any, tmp_path: Path
) -> None:
    broken = {**organization_full(), "id": "broken-org", "name": "Broken Org", "services": "counselling"}
    result = cli(base_env(home), "partners", "import", str(write_json(tmp_path / "x.json", [broken])))
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        "skipped    -  Broken Org: services is not a list",
        "0 new, 0 updated, 0 unchanged, 1 skipped; imported 0 partner(s) in one transaction",
    ]


def test_reimporting_changed_data_updates_the_partner_keeps_its_capacity_and_its_open_offers(
    home: Path, services: Any, client: Any, make_user: Any, tmp_path: Path
) -> None:
    env = base_env(home)
    cli(env, "partners", "import", str(write_json(tmp_path / "v1.json", organization_full())))
    with services.uow() as uow:
        uow.session.get(Partner, ORG_ID).capacity = 40  # set by an admin after the first import
        uow.commit()
    cw = make_user("caseworker")
    resp = client.post("/api/v1/referrals", json=referral_body(needs=["psychosocial"]), headers=cw.headers)
    assert resp.status_code == 201
    drain(services)
    with services.uow() as uow:
        [offer] = uow.session.scalars(select(Assignment)).all()
        assert (offer.partner_id, offer.status) == (ORG_ID, "offered")

    v2 = organization_full()
    v2["services"].append({"id": "legal-1", "name": "Legal aid clinic for victims", "minimum_age": 18})
    result = cli(env, "partners", "import", str(write_json(tmp_path / "v2.json", v2)))

    assert result.stdout.splitlines()[0] == f"updated    {ORG_ID}  Example Organization Inc. (services)"
    got = _partners(services)[ORG_ID]
    assert got["services"] == ["legal_aid", "medical", "psychosocial"]
    assert got["capacity"] == 40
    with services.uow() as uow:
        assert (
            uow.session.scalar(select(func.count()).select_from(Assignment).where(Assignment.status == "offered")) == 1
        )


def test_a_plain_list_of_partner_objects_still_imports_and_bad_ones_are_skipped_with_reasons(
    home: Path, services: Any, tmp_path: Path
) -> None:
    good = {"id": "p-a", "name": "A", "services": ["medical"], "districts": ["Peshawar"], "capacity": 3}
    bad = {"id": "p-b", "name": "B", "services": ["medical"], "districts": ["Atlantis"], "capacity": 3}
    result = cli(base_env(home), "partners", "import", str(write_json(tmp_path / "p.json", [good, bad])))
    assert result.stdout.splitlines() == [
        "new        p-a  A",
        "skipped    -  B: districts: unknown district 'Atlantis'",
        "1 new, 0 updated, 0 unchanged, 1 skipped; imported 1 partner(s) in one transaction",
    ]
    assert json.loads(json.dumps(_partners(services)["p-a"]))["capacity"] == 3


def test_names_with_line_breaks_control_characters_or_unstorable_text_are_skipped_and_cannot_forge_a_line(
    home: Path, services: Any, tmp_path: Path
) -> None:
    def partner(pid: str, name: str) -> dict[str, Any]:
        return {"id": pid, "name": name, "services": ["medical"], "districts": ["Peshawar"], "capacity": 3}

    forged = "A\nupdated    p-edhi  Edhi Foundation (nothing else changed)"
    records = [
        partner("p-a", forged),
        partner("p-nul", "Nul\x00 Relief"),
        partner("p-esc", "Esc \x1b[1A\x1b[2K"),
        partner("p-half", "Half \ud800 pair"),
        partner("p-ok", "خیبر ریلیف"),  # noqa: RUF001 - Urdu text is a name like any other
    ]
    file = tmp_path / "p.json"
    file.write_text(json.dumps(records))  # \u escapes: what a publisher's file can hold
    result = cli(base_env(home), "partners", "import", str(file))
    lines = result.stdout.splitlines()
    assert lines == [
        "skipped    -  A\\nupdated    p-edhi  Edhi Foundation (nothing else changed): name: no control characters",
        "skipped    -  Nul\\x00 Relief: name: no control characters",
        "skipped    -  Esc \\x1b[1A\\x1b[2K: name: no control characters",
        "skipped    -  Half \\ud800 pair: name: no control characters",
        "new        p-ok  خیبر ریلیف",  # noqa: RUF001
        "1 new, 0 updated, 0 unchanged, 4 skipped; imported 1 partner(s) in one transaction",
    ]
    assert sorted(_partners(services)) == ["p-ok"]
