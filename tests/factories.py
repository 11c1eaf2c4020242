"""Test data builders. Marker values are distinctive so leak scans can look for them."""

from __future__ import annotations

import copy
from typing import Any

BASE_REFERRAL: dict[str, Any] = {
    "subject": {
        "full_name": "Zarmeena Khattak",
        "date_of_birth": "1990-04-12",
        "sex": "female",
        "cnic": "17301-1234567-2",
        "phone": "+923001234567",
        "address": "House 12, Street 4, Hayatabad Phase 3",
        "province": "Khyber Pakhtunkhwa",
        "district": "Peshawar",
        "preferred_language": "ps",
    },
    "incident": {"type": "bombing", "date": "2026-09-30", "narrative": "Injured at the Qissa Khwani bazaar blast"},
    "needs": ["medical"],
    "risk_level": "high",
    "consent": {"given": True, "method": "verbal", "share": ["contact"]},
    "preferences": {"staff_sex": "any"},
}

PARTNER: dict[str, Any] = {
    "id": "p-peshawar-medical",
    "name": "Peshawar Medical Relief",
    "networks": ["victim_assistance"],
    "services": ["medical", "psychosocial"],
    "provinces": ["Khyber Pakhtunkhwa"],
    "districts": ["Peshawar"],
    "languages": ["ps", "ur"],
    "capacity": 10,
    "accepts_minors": True,
    "staff_sex": ["female", "male"],
    "active": True,
}


def referral_body(**overrides: Any) -> dict[str, Any]:
    """A valid referral body; `subject__phone=None` style keys override nested fields."""
    body = copy.deepcopy(BASE_REFERRAL)
    for key, value in overrides.items():
        target = body
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        if value is _DELETE:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return body


def partner(**overrides: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PARTNER), **overrides}


class _Delete:
    pass


_DELETE = _Delete()
DELETE: Any = _DELETE
