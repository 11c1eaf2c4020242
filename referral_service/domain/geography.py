"""Pakistan's provinces, territories and districts, for validating and offering places.

The list lives in ``referral_service/data/pakistan_admin_units.json`` and is read once, on first use.
Names are official English names; matching is case-insensitive and tolerant of spacing, hyphens and
"&" for "and", but otherwise exact: no aliases or fuzzy matching.

Error messages name only canonical provinces and districts, never what the caller typed: the
input could be anything a person put in a form field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

_DATA_FILE = "pakistan_admin_units.json"

_DASHES = re.compile(r"[-\u2010-\u2015\u2212]")
_SPACES = re.compile(r"\s+")


class UnknownPlace(Exception):
    """A province or district that is not on the list, or a district outside the named province.

    ``field`` is ``"district"`` or ``"province"``: the form field to flag.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Place:
    province: str
    district: str


@dataclass(frozen=True)
class _Index:
    provinces: tuple[str, ...]  # canonical, sorted
    districts: dict[str, tuple[str, ...]]  # canonical province -> canonical districts, sorted
    province_by_key: dict[str, str]  # normalised name -> canonical province
    district_by_key: dict[str, dict[str, str]]  # normalised name -> {canonical province: canonical district}


def _key(name: str | None) -> str:
    """Normalise a name for matching: case, width, dashes, "&" and runs of whitespace don't matter."""
    if not isinstance(name, str):
        return ""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = _DASHES.sub(" ", text).replace("&", " and ")
    return _SPACES.sub(" ", text).strip()


def _build_index(raw: dict[str, Any]) -> _Index:
    districts: dict[str, tuple[str, ...]] = {}
    province_by_key: dict[str, str] = {}
    district_by_key: dict[str, dict[str, str]] = {}
    for entry in raw["provinces"]:
        province = entry["name"]
        if _key(province) in province_by_key:
            raise ValueError(f"{_DATA_FILE}: province listed twice: {province}")
        province_by_key[_key(province)] = province
        names = tuple(sorted(entry["districts"]))
        if not names:
            raise ValueError(f"{_DATA_FILE}: province without districts: {province}")
        for district in names:
            in_provinces = district_by_key.setdefault(_key(district), {})
            if province in in_provinces:
                raise ValueError(f"{_DATA_FILE}: district listed twice in {province}: {district}")
            in_provinces[province] = district
        districts[province] = names
    return _Index(
        provinces=tuple(sorted(districts)),
        districts=districts,
        province_by_key=province_by_key,
        district_by_key=district_by_key,
    )


@cache
def _index() -> _Index:
    text = (files("referral_service") / "data" / _DATA_FILE).read_text(encoding="utf-8")
    return _build_index(json.loads(text))


def _province(name: str) -> str:
    province = _index().province_by_key.get(_key(name))
    if province is None:
        raise UnknownPlace("province", "unknown province")
    return province


def resolve_place(province: str | None, district: str) -> Place:
    """The canonical place for a province (optional) and district as typed or picked in a form.

    Without a province, it is inferred from the district when the name is unique. Raises
    ``UnknownPlace`` for an unknown district or province, or a district not in that province.
    """
    index = _index()
    if not _key(district):
        raise UnknownPlace("district", "district is required")
    matches = index.district_by_key.get(_key(district))
    if not matches:
        raise UnknownPlace("district", "unknown district")
    if province is not None and _key(province):
        canonical_province = _province(province)
        if canonical_province not in matches:
            name = next(iter(matches.values()))
            raise UnknownPlace("district", f"{name} is not a district of {canonical_province}")
        return Place(canonical_province, matches[canonical_province])
    if len(matches) > 1:
        raise UnknownPlace("province", "district exists in several provinces; name the province")
    ((canonical_province, canonical_district),) = matches.items()
    return Place(canonical_province, canonical_district)


def provinces() -> list[str]:
    """Canonical province and territory names, sorted."""
    return list(_index().provinces)


def districts(province: str | None = None) -> list[str]:
    """Canonical district names, sorted: of one province, or of all (each name once)."""
    index = _index()
    if province is not None and _key(province):
        return list(index.districts[_province(province)])
    return sorted({d for names in index.districts.values() for d in names})
