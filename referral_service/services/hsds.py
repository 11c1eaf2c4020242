"""Partners from Open Referral HSDS 3.0 data, in every form a publisher produces.

Forms read (`read_directory_source`): one organization object, a JSON list (of organizations, or of
partner objects as in our own API), an HSDS API page `{"total_items": …, "contents": [...]}` and a folder
of such pages, and the tabular data package (a folder or a zip with `datapackage.json` and the CSV files,
as in openreferral/specification `examples/csv`), which is first put together into nested organizations.

Per organization (`partners_from_hsds`): places come from the services' service areas and from the
locations' addresses (`state_province`, `city`), languages from the HSDS language objects of services
and locations, services through our taxonomy mapping (taxonomy-term codes, else words in the service
name). HSDS has no fields for capacity or staff sex: a new partner gets the import's defaults, and an
existing one keeps what was set through the API. Whatever is wrong with one organization skips that
organization with the reason; it never stops the others, and never raises anything but `HsdsFileError`
for the file as a whole.
"""

from __future__ import annotations

import csv
import io
import json
import lzma
import os
import re
import stat
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from referral_service.domain.geography import UnknownPlace, provinces, resolve_place
from referral_service.domain.model import LANGUAGES, PARTNER_FIELDS, SERVICES
from referral_service.domain.text import shown

_WORDS = {
    "medical": ("medical", "health", "hospital", "clinic", "trauma care", "physiotherapy"),
    "psychosocial": ("psychosocial", "counselling", "counseling", "mental health", "psycholog", "trauma counsel"),
    "legal_aid": ("legal", "law", "lawyer", "court"),
    "shelter": ("shelter", "housing", "safe house", "accommodation"),
    "livelihood": ("livelihood", "vocational", "employment", "skills", "job"),
    "financial": ("financial", "cash", "compensation", "grant", "stipend"),
    "education": ("education", "school", "scholarship", "tuition"),
}
# ISO 639-3 codes and English names HSDS publishers use, onto our language codes.
_LANGUAGE_ALIASES = {
    "urd": "ur",
    "urdu": "ur",
    "eng": "en",
    "english": "en",
    "pus": "ps",
    "pbt": "ps",
    "pbu": "ps",
    "pashto": "ps",
    "pakhto": "ps",
    "pan": "pa",
    "pnb": "pa",
    "punjabi": "pa",
    "snd": "sd",
    "sindhi": "sd",
    "bal": "bal",
    "bgp": "bal",
    "balochi": "bal",
    "skr": "skr",
    "saraiki": "skr",
    "hnd": "hnd",
    "hindko": "hnd",
    "bsk": "bsk",
    "burushaski": "bsk",
    "scl": "shi",
    "shina": "shi",
    "kas": "kas",
    "kashmiri": "kas",
    "brh": "brh",
    "brahui": "brh",
}
# Keys of a partner object in our own API format (a list of these is imported as it is).
PARTNER_KEYS = frozenset({"id", *PARTNER_FIELDS})
# What HSDS cannot say: set on a new partner from the defaults, never overwritten on an existing one.
KEPT_ON_UPDATE = ("capacity", "staff_sex", "active", "networks", "notify_language")
MB = 1024 * 1024
MAX_FILE_BYTES = 50 * MB
MAX_TOTAL_BYTES = 50 * MB  # all files of one import together
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class HsdsFileError(Exception):
    """The file (or folder) as a whole cannot be read; the message is one line for the operator."""


class _Skip(Exception):
    """This organization cannot become a partner; the message is the reason (no personal data)."""


@dataclass
class Converted:
    """One record of the source: the partner object it gives, or why it was skipped."""

    label: str
    partner: dict[str, Any] | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    keep_on_update: tuple[str, ...] = ()


# -- reading the source --------------------------------------------------------------------------
class _Budget:
    """What one import may read in all (pages, tables, zip members together): a data package that names
    one table many times, or a folder of many pages, must not hold the operator's memory."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.left = MAX_TOTAL_BYTES

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise HsdsFileError(f"{self.where}: its files together are larger than {MAX_TOTAL_BYTES // MB} MB")


def read_directory_source(path: Path) -> list[Any]:
    """The records of a file, folder or zip: organizations (nested HSDS) or partner objects."""
    budget = _Budget(str(path))
    if path.is_dir():
        if (path / "datapackage.json").is_file():
            return _tabular(lambda name: _read_inside(path, name, budget), str(path))
        pages = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
        if not pages:
            raise HsdsFileError(f"{path}: the folder holds neither datapackage.json nor .json pages")
        records: list[Any] = []
        for page in pages:
            records.extend(_records_of(_parse_json(_read_inside(path, page.name, budget), page.name), page.name))
        return records
    if zipfile.is_zipfile(path):
        return _from_zip(path, budget)
    return _records_of(_parse_json(_read_bytes(path, budget), str(path)), str(path))


def _read_inside(folder: Path, name: str, budget: _Budget) -> bytes:
    """A file of the folder, itself: a symbolic link that leads out of the folder is refused (a
    publisher's folder must not make the import read the operator's own files)."""
    path = folder / name
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        inside = False
    if not inside:
        raise HsdsFileError(f"{path}: a link that leads out of the folder; not read")
    return _read_bytes(path, budget)


def _read_bytes(path: Path, budget: _Budget) -> bytes:
    try:
        # Only a regular file: a device or a named pipe would be read without end, or wait for ever
        # (opening a pipe waits for a writer, unless non-blocking; a regular file ignores the flag).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise HsdsFileError(f"{path}: not a regular file")
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise HsdsFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise HsdsFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise HsdsFileError(f"{path}: larger than {MAX_FILE_BYTES // MB} MB")
    budget.take(len(raw))
    return raw


def _parse_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        line = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise HsdsFileError(f"{where} is not valid JSON{line}") from None
    except RecursionError:
        raise HsdsFileError(f"{where}: JSON nested too deeply to be a directory") from None


def _records_of(data: Any, where: str) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("contents", "organizations"):
            if key in data:
                if not isinstance(data[key], list):
                    raise HsdsFileError(f"{where}: {key!r} must be a list")
                return list(data[key])
        if "name" in data or "services" in data:
            return [data]
    raise HsdsFileError(
        f"{where} must hold an HSDS organization, a list of organizations or partner objects, "
        'an HSDS API page {"contents": [...]}, or a tabular data package'
    )


# What reading a zip member can raise besides BadZipFile: an encrypted member (RuntimeError), a
# compression method not supported (NotImplementedError), damaged compressed data (zlib, bz2, lzma).
_MEMBER_ERRORS = (RuntimeError, NotImplementedError, EOFError, ValueError, OSError, zlib.error, lzma.LZMAError)


def _from_zip(path: Path, budget: _Budget) -> list[Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if PurePosixPath(n).name == "datapackage.json"]
            if not names:
                raise HsdsFileError(f"{path}: the zip holds no datapackage.json")
            base = PurePosixPath(min(names, key=len)).parent

            def member(name: str) -> bytes:
                inner = str(base / name) if str(base) != "." else name
                try:
                    info = archive.getinfo(inner)
                except KeyError:
                    raise FileNotFoundError(inner) from None
                if info.file_size > MAX_FILE_BYTES:
                    raise HsdsFileError(f"{path}: {inner} is larger than {MAX_FILE_BYTES // MB} MB")
                budget.take(info.file_size)  # the size read is at most the one declared (else a bad CRC)
                try:
                    return archive.read(info)
                except _MEMBER_ERRORS as exc:
                    why = "encrypted" if info.flag_bits & 0x1 else f"damaged or not supported ({type(exc).__name__})"
                    raise HsdsFileError(f"{path}: {inner[:80]} cannot be read: {why}") from None

            return _tabular(member, str(path))
    except zipfile.BadZipFile:
        raise HsdsFileError(f"{path}: not a readable zip file") from None


def _tabular(read: Callable[[str], bytes], where: str) -> list[dict[str, Any]]:
    """Nested organizations from a tabular data package (HSDS 3 tables joined on their ids)."""
    package = _parse_json(read("datapackage.json"), f"{where}/datapackage.json")
    resources = package.get("resources") if isinstance(package, dict) else None
    if not isinstance(resources, list):
        raise HsdsFileError(f"{where}/datapackage.json has no list of resources")
    tables: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        if not isinstance(resource, dict) or not isinstance(resource.get("path"), str):
            continue
        name, rel = str(resource.get("name") or ""), resource["path"]
        if ".." in PurePosixPath(rel).parts or rel.startswith("/"):
            raise HsdsFileError(f"{where}/datapackage.json: resource path {rel[:60]!r} leaves the package")
        try:
            raw = read(rel)
        except (FileNotFoundError, HsdsFileError) as exc:
            if isinstance(exc, HsdsFileError) and "no such file" not in str(exc):
                raise
            continue  # a publisher ships only the tables it has
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HsdsFileError(f"{where}/{rel} is not UTF-8 text") from None
        try:
            tables[name] = [
                {k: (v if v != "" else None) for k, v in row.items() if k} for row in csv.DictReader(io.StringIO(text))
            ]
        except csv.Error as exc:
            raise HsdsFileError(f"{where}/{rel}: not readable CSV ({exc})") from None
    if "organization" not in tables:
        raise HsdsFileError(f"{where}: the data package has no organizations table (organizations.csv)")
    return _nest(tables)


def _by(rows: Iterable[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(key):
            out[str(row[key])].append(row)
    return out


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return value
    return value


def _nest(t: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    terms = {row["id"]: row for row in t.get("taxonomy_term", []) if row.get("id")}
    addresses = _by(t.get("address", []), "location_id")
    languages_by_service = _by(t.get("language", []), "service_id")
    languages_by_location = _by(t.get("language", []), "location_id")
    attributes = _by(t.get("attribute", []), "link_id")
    areas = _by(t.get("service_area", []), "service_id")
    locations = {
        row["id"]: {
            **row,
            "addresses": addresses.get(row["id"], []),
            "languages": languages_by_location.get(row["id"], []),
        }
        for row in t.get("location", [])
        if row.get("id")
    }
    at_location = _by(t.get("service_at_location", []), "service_id")

    def attrs(link_id: str) -> list[dict[str, Any]]:
        return [{**a, "taxonomy_term": terms.get(a.get("taxonomy_term_id") or "")} for a in attributes.get(link_id, [])]

    services_by_org: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in t.get("service", []):
        sid = row.get("id") or ""
        services_by_org[str(row.get("organization_id") or "")].append(
            {
                **row,
                "minimum_age": _number(row.get("minimum_age")),
                "service_areas": areas.get(sid, []),
                "languages": languages_by_service.get(sid, []),
                "attributes": attrs(sid),
                "service_at_locations": [
                    {**sal, "location": locations.get(sal.get("location_id") or "")} for sal in at_location.get(sid, [])
                ],
            }
        )
    locations_by_org = _by(locations.values(), "organization_id")
    return [
        {
            **org,
            "services": services_by_org.get(org.get("id") or "", []),
            "locations": locations_by_org.get(org.get("id") or "", []),
        }
        for org in t["organization"]
    ]


# -- one organization ----------------------------------------------------------------------------
def is_partner_object(record: Any) -> bool:
    """A partner object in our API format (its keys ours, its services our codes), not an HSDS organization."""
    return (
        isinstance(record, dict)
        and set(record) <= PARTNER_KEYS
        and isinstance(record.get("services"), list)
        and all(isinstance(s, str) for s in record["services"])
    )


def looks_like_hsds(data: Any) -> bool:
    """Kept for callers of the earlier version: a list whose first record is an HSDS organization."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and not is_partner_object(data[0])


def _list(value: Any, what: str) -> list[Any]:
    """A list field of HSDS (null or absent is empty); anything else skips the organization."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Skip(f"{what} is not a list")
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Skip(f"{what} is not an object")
    return value


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _service_codes(service: dict[str, Any], where: str) -> set[str]:
    codes: set[str] = set()
    for i, attr in enumerate(_list(service.get("attributes"), f"{where}.attributes")):
        attr = _obj(attr, f"{where}.attributes[{i}]")
        term = attr.get("taxonomy_term") or {}
        if not isinstance(term, dict):
            raise _Skip(f"{where}.attributes[{i}].taxonomy_term is not an object")
        for value in (term.get("code"), term.get("term"), term.get("name")):
            code = _text(value).lower().replace(" ", "_")
            if code in SERVICES:
                codes.add(code)
    if codes:
        return codes
    # The name says what the service is; the description only when the name says nothing we know
    # (a description mentions much else: "for people with mental health conditions" is no clinic).
    for keys in (("name", "alternate_name"), ("description",)):
        text = " ".join(_text(service.get(k)) for k in keys).lower()
        codes = {code for code, words in _WORDS.items() if any(w in text for w in words)}
        if codes:
            return codes
    return set()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63] or "partner"


def _language(value: Any) -> str | None:
    candidates = [value.get("code"), value.get("name")] if isinstance(value, dict) else [value]
    for candidate in candidates:
        key = _text(candidate).lower()
        if key in LANGUAGES and key != "other":
            return key
        if key in _LANGUAGE_ALIASES:
            return _LANGUAGE_ALIASES[key]
    return None


@dataclass
class _Places:
    provinces: set[str] = field(default_factory=set)
    districts: set[str] = field(default_factory=set)


class _Organization:
    """The reading of one HSDS organization; `_Skip` ends it with the reason."""

    def __init__(self, org: dict[str, Any], label: str) -> None:
        self.org = org
        self.label = label
        self.places = _Places()
        self.languages: set[str] = set()
        self.warnings: list[str] = []
        self._province_names = {p.casefold(): p for p in provinces()}
        self._seen_locations: set[int] = set()

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.label}: {message}")

    def area(self, name: str) -> None:
        if not name:
            return
        if name.casefold() in self._province_names:
            self.places.provinces.add(self._province_names[name.casefold()])
            return
        try:
            place = resolve_place(None, name)
        except UnknownPlace:
            self.warn(f"service area {name[:60]!r} is not a province or district")
            return
        self.places.districts.add(place.district)
        self.places.provinces.add(place.province)

    def address(self, address: dict[str, Any]) -> None:
        state, city = _text(address.get("state_province")), _text(address.get("city"))
        region = _text(address.get("region"))
        province = self._province_names.get(state.casefold()) or self._province_names.get(region.casefold())
        for district in (city, region):
            if not district:
                continue
            try:
                place = resolve_place(province, district)
            except UnknownPlace:
                continue
            self.places.districts.add(place.district)
            self.places.provinces.add(place.province)
            self._country(address)
            return
        if province:
            self.places.provinces.add(province)
            self._country(address)
        elif state or city:
            self.warn(f"address in {', '.join(x for x in (city, state) if x)[:60]!r} is not a place in Pakistan")

    def _country(self, address: dict[str, Any]) -> None:
        country = _text(address.get("country")).upper()
        if country and country not in ("PK", "PAK", "PAKISTAN"):
            self.warn(f"address in Pakistan has country {country[:20]!r}")

    def location(self, location: Any, where: str) -> None:
        if location is None:
            return
        location = _obj(location, where)
        if id(location) in self._seen_locations:
            return
        self._seen_locations.add(id(location))
        for i, address in enumerate(_list(location.get("addresses"), f"{where}.addresses")):
            self.address(_obj(address, f"{where}.addresses[{i}]"))
        self.language_objects(location.get("languages"), f"{where}.languages")

    def language_objects(self, value: Any, where: str) -> None:
        for lang in _list(value, where):
            code = _language(lang)
            if code is not None:
                self.languages.add(code)
            else:
                shown = (lang.get("code") or lang.get("name")) if isinstance(lang, dict) else lang
                self.warn(f"language {str(shown)[:30]!r} is not one the network records")

    def convert(self, *, capacity: int) -> dict[str, Any]:
        org = self.org
        name = _text(org.get("name"))
        if not name:
            raise _Skip("no name")
        services: set[str] = set()
        minors = False
        for i, loc in enumerate(_list(org.get("locations"), "locations")):
            self.location(loc, f"locations[{i}]")
        for i, service in enumerate(_list(org.get("services"), "services")):
            where = f"services[{i}]"
            service = _obj(service, where)
            status = _text(service.get("status")).lower()
            if status in ("inactive", "defunct"):
                self.warn(f"service {_text(service.get('name'))[:60]!r} is {status}; left out")
                continue
            codes = _service_codes(service, where)
            if not codes:
                self.warn(f"service {_text(service.get('name'))[:60]!r} matches no service type")
                continue
            services |= codes
            for j, area in enumerate(_list(service.get("service_areas"), f"{where}.service_areas")):
                self.area(_text(_obj(area, f"{where}.service_areas[{j}]").get("name")))
            for j, sal in enumerate(_list(service.get("service_at_locations"), f"{where}.service_at_locations")):
                self.location(_obj(sal, f"{where}.service_at_locations[{j}]").get("location"), f"{where}.location")
            self.language_objects(service.get("languages"), f"{where}.languages")
            minimum_age = service.get("minimum_age")
            if minimum_age is None or (isinstance(minimum_age, int | float) and minimum_age < 18):
                minors = True
        if not services:
            raise _Skip("no service maps onto the network's service types")
        if not self.places.provinces and not self.places.districts:
            raise _Skip("no place in Pakistan: no service area or address names a province or district")
        partner: dict[str, Any] = {
            "id": _slug(_text(org.get("id")) or name),
            "name": name[:200],
            "networks": ["victim_assistance"],
            "services": sorted(services),
            "provinces": sorted(self.places.provinces),
            "districts": sorted(self.places.districts),
            "languages": sorted(self.languages),
            "capacity": capacity,
            "accepts_minors": minors,
            "staff_sex": [],
            "active": True,
        }
        email = _text(org.get("email"))
        if email and _EMAIL.match(email) and len(email) <= 254:
            partner["contact_email"] = email
        return partner


def convert_records(records: list[Any], *, capacity: int = 10) -> list[Converted]:
    """Each record as a partner object (HSDS organizations converted, partner objects as they are)."""
    out: list[Converted] = []
    for n, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            out.append(Converted(f"record {n}", reason=f"not an object but {type(record).__name__}"))
            continue
        # The label goes on the operator's lines as it is: a name's line break must not start a line.
        label = shown(_text(record.get("name"))[:80] or _text(record.get("id"))[:80] or f"record {n}")
        if is_partner_object(record):
            out.append(Converted(label, partner=record))
            continue
        reading = _Organization(record, label)
        try:
            partner = reading.convert(capacity=capacity)
        except _Skip as exc:
            out.append(Converted(label, reason=str(exc), warnings=reading.warnings))
            continue
        out.append(Converted(label, partner=partner, warnings=reading.warnings, keep_on_update=KEPT_ON_UPDATE))
    return out


def partners_from_hsds(
    organizations: list[dict[str, Any]], *, capacity: int = 10
) -> tuple[list[dict[str, Any]], list[str]]:
    """(partner objects ready for PartnerSchema, warnings): the earlier interface, kept."""
    partners, warnings = [], []
    for c in convert_records(list(organizations), capacity=capacity):
        warnings.extend(c.warnings)
        if c.partner is None:
            warnings.append(f"{c.label}: {c.reason}; skipped")
        else:
            partners.append(c.partner)
    return partners, warnings
