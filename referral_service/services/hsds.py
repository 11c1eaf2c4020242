"""Partners from an Open Referral HSDS 3.0 export (organizations with nested services).

HSDS has no fields for capacity or staff sex, so those come from the import's defaults and can be
set afterwards through the API. Services map onto our taxonomy by their taxonomy-term codes or, failing
that, by words in the service name; unmapped services are reported, never guessed.
"""

from __future__ import annotations

import re
from typing import Any

from referral_service.domain.geography import UnknownPlace, provinces, resolve_place
from referral_service.domain.model import SERVICES

_WORDS = {
    "medical": ("medical", "health", "hospital", "clinic", "trauma care", "physiotherapy"),
    "psychosocial": ("psychosocial", "counselling", "counseling", "mental health", "psycholog", "trauma counsel"),
    "legal_aid": ("legal", "law", "lawyer", "court"),
    "shelter": ("shelter", "housing", "safe house", "accommodation"),
    "livelihood": ("livelihood", "vocational", "employment", "skills", "job"),
    "financial": ("financial", "cash", "compensation", "grant", "stipend"),
    "education": ("education", "school", "scholarship", "tuition"),
}


def _service_codes(service: dict[str, Any]) -> set[str]:
    codes: set[str] = set()
    for attr in service.get("attributes") or []:
        term = (attr or {}).get("taxonomy_term") or {}
        for value in (term.get("code"), term.get("term"), term.get("name")):
            if isinstance(value, str) and value.strip().lower().replace(" ", "_") in SERVICES:
                codes.add(value.strip().lower().replace(" ", "_"))
    if codes:
        return codes
    text = " ".join(str(service.get(k) or "") for k in ("name", "description")).lower()
    return {code for code, words in _WORDS.items() if any(w in text for w in words)}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63] or "partner"


def partners_from_hsds(
    organizations: list[dict[str, Any]], *, capacity: int = 10
) -> tuple[list[dict[str, Any]], list[str]]:
    """(partner objects ready for PartnerSchema, warnings)."""
    province_names = {p.casefold(): p for p in provinces()}
    partners, warnings = [], []
    for org in organizations:
        name = str(org.get("name") or "").strip()
        if not name:
            warnings.append("skipped an organization without a name")
            continue
        services: set[str] = set()
        districts: set[str] = set()
        found_provinces: set[str] = set()
        languages: set[str] = set()
        minors = False
        for service in org.get("services") or []:
            codes = _service_codes(service)
            if not codes:
                warnings.append(f"{name}: service {str(service.get('name'))[:60]!r} matches no service type")
            services |= codes
            for area in service.get("service_areas") or []:
                area_name = str((area or {}).get("name") or "").strip()
                if area_name.casefold() in province_names:
                    found_provinces.add(province_names[area_name.casefold()])
                    continue
                try:
                    place = resolve_place(None, area_name)
                except UnknownPlace:
                    warnings.append(f"{name}: service area {area_name[:60]!r} is not a province or district")
                    continue
                districts.add(place.district)
                found_provinces.add(place.province)
            for lang in service.get("languages") or []:
                code = lang.get("code") if isinstance(lang, dict) else lang
                if isinstance(code, str):
                    languages.add(code.lower())
            minimum_age = service.get("minimum_age")
            if minimum_age is None or (isinstance(minimum_age, int | float) and minimum_age < 18):
                minors = True
        if not services:
            warnings.append(f"{name}: no service maps onto the network's service types; skipped")
            continue
        partners.append(
            {
                "id": _slug(str(org.get("id") or name)),
                "name": name,
                "networks": ["victim_assistance"],
                "services": sorted(services),
                "provinces": sorted(found_provinces),
                "districts": sorted(districts),
                "languages": sorted(languages),
                "capacity": capacity,
                "accepts_minors": minors,
                "staff_sex": [],
                "active": True,
            }
        )
    return partners, warnings


def looks_like_hsds(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], dict)
        and any(isinstance(s, dict) for s in data[0].get("services") or [])
    )
