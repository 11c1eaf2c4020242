"""The official HSDS 3.0 examples (tests/data/hsds, unchanged), copied and given a Pakistani address."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

OFFICIAL = Path(__file__).parent / "data" / "hsds"
PESHAWAR = {"city": "Peshawar", "state_province": "Khyber Pakhtunkhwa", "country": "PK"}


def _rehome(value: Any) -> Any:
    """Every address in the document moved to Peshawar, Khyber Pakhtunkhwa (nothing else changed)."""
    if isinstance(value, dict):
        moved = {k: _rehome(v) for k, v in value.items()}
        if "state_province" in value and "city" in value:
            moved.update(PESHAWAR)
        return moved
    if isinstance(value, list):
        return [_rehome(v) for v in value]
    return value


def organization_full() -> dict[str, Any]:
    return _rehome(json.loads((OFFICIAL / "organization_full.json").read_text()))


def organization_list_page() -> dict[str, Any]:
    return json.loads((OFFICIAL / "organization_list.json").read_text())


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def tabular_folder(target: Path) -> Path:
    """The official examples/csv data package, its addresses.csv moved to Peshawar."""
    shutil.copytree(OFFICIAL / "csv", target)
    rows = list(csv.DictReader(io.StringIO((target / "addresses.csv").read_text())))
    for row in rows:
        row.update(PESHAWAR)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (target / "addresses.csv").write_text(out.getvalue())
    return target


def tabular_zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for f in sorted(folder.iterdir()):
            archive.write(f, f"hsds-export/{f.name}")
    return target
