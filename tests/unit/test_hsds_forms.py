"""Every form an HSDS 3 publisher produces, read from the official Open Referral examples."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from referral_service.services import hsds
from referral_service.services.hsds import HsdsFileError, convert_records, read_directory_source
from schemas import PartnerSchema
from tests.hsds_fixtures import (
    OFFICIAL,
    organization_full,
    organization_list_page,
    tabular_folder,
    tabular_zip,
    write_json,
)

ORG_ID = "d9d5e0f5-d3ce-4f73-9a2f-4dd0ecc6c610"


def _only_partner(path: Path) -> dict:
    converted = convert_records(read_directory_source(path))
    assert [c.reason for c in converted] == [None]
    return PartnerSchema().load(converted[0].partner)


def test_one_official_organization_object_becomes_a_partner_in_peshawar(tmp_path: Path) -> None:
    p = _only_partner(write_json(tmp_path / "org.json", organization_full()))
    assert p["id"] == ORG_ID
    assert p["name"] == "Example Organization Inc."
    assert p["services"] == ["psychosocial"]  # "Community Counselling"
    assert p["provinces"] == ["Khyber Pakhtunkhwa"]
    assert p["districts"] == ["Peshawar"]
    assert p["languages"] == ["ur"]
    assert p["accepts_minors"] is True  # minimum_age 12
    assert p["contact_email"] == "email@example.com"


def test_a_list_and_an_api_page_of_the_same_organization_give_the_same_partner(tmp_path: Path) -> None:
    single = _only_partner(write_json(tmp_path / "one.json", organization_full()))
    listed = _only_partner(write_json(tmp_path / "list.json", [organization_full()]))
    page = {**organization_list_page(), "contents": [organization_full()]}
    paged = _only_partner(write_json(tmp_path / "page.json", page))
    assert single == listed == paged


def test_a_folder_of_api_pages_reads_every_page_and_skips_organizations_without_services(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    write_json(pages / "page-1.json", {**organization_list_page(), "contents": [organization_full()]})
    # The official list page as published: the compact organization there has no services.
    write_json(pages / "page-2.json", organization_list_page())
    converted = convert_records(read_directory_source(pages))
    assert [c.partner["id"] if c.partner else None for c in converted] == [ORG_ID, None]
    assert converted[1].reason == "no service maps onto the network's service types"


def test_the_official_tabular_datapackage_folder_and_zip_import_with_the_address_place(tmp_path: Path) -> None:
    folder = tabular_folder(tmp_path / "csv")
    from_folder = _only_partner(folder)
    from_zip = _only_partner(tabular_zip(folder, tmp_path / "hsds.zip"))
    assert from_folder == from_zip
    assert from_folder["id"] == ORG_ID
    assert from_folder["services"] == ["psychosocial"]
    # The CSV example's location belongs to another organization id, but the service is offered there
    # (service_at_location): its address is where the service is.
    assert from_folder["districts"] == ["Peshawar"]
    assert from_folder["languages"] == ["ur"]


def test_the_unchanged_official_example_is_skipped_for_having_no_place_in_pakistan(tmp_path: Path) -> None:
    converted = convert_records(read_directory_source(OFFICIAL / "organization_full.json"))
    assert converted[0].partner is None
    assert converted[0].reason == "no place in Pakistan: no service area or address names a province or district"
    assert any("'MyCity, MyState'" in w for w in converted[0].warnings)


def test_services_that_are_not_a_list_skip_that_organization_with_a_reason(tmp_path: Path) -> None:
    broken = {**organization_full(), "id": "broken", "name": "Broken Org", "services": "counselling"}
    converted = convert_records(read_directory_source(write_json(tmp_path / "x.json", [broken, organization_full()])))
    assert converted[0].partner is None and converted[0].reason == "services is not a list"
    assert converted[1].partner is not None


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        (lambda o: o["services"].__setitem__(0, "x"), "services[0] is not an object"),
        (lambda o: o["services"][0].__setitem__("attributes", {}), "services[0].attributes is not a list"),
        (lambda o: o.__setitem__("locations", [7]), "locations[0] is not an object"),
        (lambda o: o["locations"][0].__setitem__("addresses", "Peshawar"), "locations[0].addresses is not a list"),
        (lambda o: o.__setitem__("name", None), "no name"),
    ],
)
def test_malformed_parts_of_an_organization_are_named_not_raised(tmp_path: Path, mutation, reason) -> None:
    org = organization_full()
    mutation(org)
    converted = convert_records(read_directory_source(write_json(tmp_path / "x.json", org)))
    assert converted[0].reason == reason


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1)"),
        ('"a string"', "must hold an HSDS organization"),
        ('{"contents": {"a": 1}}', "'contents' must be a list"),
    ],
)
def test_a_malformed_file_is_one_line_naming_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HsdsFileError) as err:
        read_directory_source(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_datapackage_without_organizations_is_refused(tmp_path: Path) -> None:
    folder = tabular_folder(tmp_path / "csv")
    (folder / "organizations.csv").unlink()
    with pytest.raises(HsdsFileError, match="no organizations table"):
        read_directory_source(folder)


def test_partner_objects_in_our_own_format_pass_through_unchanged(tmp_path: Path) -> None:
    obj = {"id": "p-1", "name": "P", "services": ["medical"], "districts": ["Peshawar"], "capacity": 3}
    converted = convert_records(read_directory_source(write_json(tmp_path / "p.json", [obj])))
    assert converted[0].partner == obj and converted[0].keep_on_update == ()
    assert json.loads((tmp_path / "p.json").read_text()) == [obj]


def test_json_nested_too_deeply_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(HsdsFileError, match="nested too deeply"):
        read_directory_source(path)


def _central_entries(raw: bytearray) -> list[int]:
    at, found = 0, []
    while (at := raw.find(b"PK\x01\x02", at)) >= 0:
        found.append(at)
        at += 4
    return found


def _encrypted(raw: bytearray) -> None:
    for at in _central_entries(raw):
        raw[at + 8] |= 0x1  # general-purpose flag bit 0: encrypted


def _unknown_method(raw: bytearray) -> None:
    for at in _central_entries(raw):
        raw[at + 10] = 99  # the AES method number, which zipfile does not read


@pytest.mark.parametrize(("damage", "message"), [(_encrypted, "encrypted"), (_unknown_method, "not supported")])
def test_a_zip_whose_members_cannot_be_read_is_one_line(tmp_path: Path, damage: Any, message: str) -> None:
    raw = bytearray(tabular_zip(tabular_folder(tmp_path / "csv"), tmp_path / "ok.zip").read_bytes())
    damage(raw)
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises(HsdsFileError, match=message) as err:
        read_directory_source(path)
    assert "datapackage.json cannot be read" in str(err.value) and "\n" not in str(err.value)


def test_damaged_compressed_data_in_a_zip_is_one_line(tmp_path: Path) -> None:
    folder = tabular_folder(tmp_path / "csv")
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(folder.iterdir()):
            archive.write(f, f.name)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("datapackage.json")
    start = info.header_offset + 30 + len(info.filename)  # the member's compressed bytes
    for i in range(start, start + 40):
        raw[i] ^= 0xA5
    path.write_bytes(bytes(raw))
    with pytest.raises(HsdsFileError, match="datapackage.json"):
        read_directory_source(path)


def test_a_table_linked_from_outside_the_datapackage_folder_is_refused(tmp_path: Path) -> None:
    folder = tabular_folder(tmp_path / "csv")
    outside = tmp_path / "operators-own.csv"
    outside.write_text((folder / "organizations.csv").read_text())
    (folder / "organizations.csv").unlink()
    (folder / "organizations.csv").symlink_to(outside)
    with pytest.raises(HsdsFileError, match="leads out of the folder"):
        read_directory_source(folder)


def test_a_page_linked_from_outside_a_folder_of_pages_is_refused(tmp_path: Path) -> None:
    outside = write_json(tmp_path / "elsewhere.json", organization_list_page())
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "1.json").symlink_to(outside)
    with pytest.raises(HsdsFileError, match="leads out of the folder"):
        read_directory_source(tmp_path / "pages")


def test_a_named_pipe_in_the_datapackage_is_refused_not_waited_for(tmp_path: Path) -> None:
    folder = tabular_folder(tmp_path / "csv")
    (folder / "organizations.csv").unlink()
    os.mkfifo(folder / "organizations.csv")  # opening it for reading would wait for a writer for ever
    with pytest.raises(HsdsFileError, match="not a regular file"):
        read_directory_source(folder)


def test_a_datapackage_that_names_one_table_many_times_stops_at_the_total_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tabular_folder(tmp_path / "csv")
    size = (folder / "organizations.csv").stat().st_size
    package = json.loads((folder / "datapackage.json").read_text())
    package["resources"] += [{"name": f"copy{i}", "path": "organizations.csv"} for i in range(200)]
    (folder / "datapackage.json").write_text(json.dumps(package))
    total = sum(f.stat().st_size for f in folder.iterdir())
    monkeypatch.setattr(hsds, "MAX_TOTAL_BYTES", total + 10 * size)  # the package once passes, 200 copies do not
    with pytest.raises(HsdsFileError, match="together are larger than"):
        read_directory_source(folder)
    zipped = tabular_zip(folder, tmp_path / "many.zip")
    with pytest.raises(HsdsFileError, match="together are larger than"):
        read_directory_source(zipped)
    package["resources"] = package["resources"][:-200]
    (folder / "datapackage.json").write_text(json.dumps(package))
    assert read_directory_source(folder)


def test_no_warning_carries_a_control_character_from_the_file(tmp_path: Path) -> None:
    org = organization_full()
    org["name"] = "Relief\r\x1b[2K"
    org["services"][0]["status"] = "\r\x1cinactive\n"  # str.strip() takes these; the warning must not show them
    org["services"][0]["name"] = "Care\nwarning: forged"
    converted = convert_records(read_directory_source(write_json(tmp_path / "x.json", org)))
    shown = [converted[0].label, converted[0].reason or "", *converted[0].warnings]
    assert any("is inactive; left out" in w for w in converted[0].warnings)
    assert not [line for line in shown if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in line)]
