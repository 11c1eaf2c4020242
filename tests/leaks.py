"""Marker values for leak scans, and the byte forms they would take in a leaked file, log or message."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, quote_plus

from tests.factories import referral_body

# Distinctive values that cannot occur by chance; each is also searched in derived forms.
MARKERS = {
    "full_name": "Qwertzmarker Vollbrechtkhan",
    "cnic": "61101-9876543-7",
    "phone": "+923219876543",
    "address": "Plot 77 Xylomarker Gardens Jalozai",
    "narrative": "Quokkamarker witnessed the blast at Jalozai camp",
    "date_of_birth": "1983-11-27",
    "note": "Fennecmarker prefers calls after Asr",
}
CANARY = "Canarymarker Relief Organisation"
# Other spellings of the same facts that a careless encoder or index might store.
EXTRA_NEEDLES = [
    "6110198765437",
    "3219876543",
    "Qwertzmarker",
    "Vollbrechtkhan",
    "Xylomarker",
    "Quokkamarker",
    "Fennecmarker",
    "19831127",
]


def needle_forms(value: str) -> dict[str, bytes]:
    """The byte patterns `value` would leave in a file: plain, case-changed, base64, UTF-16, hex."""
    forms: dict[str, bytes] = {}
    for case_name, cased in (("plain", value), ("lower", value.lower()), ("upper", value.upper())):
        raw = cased.encode()
        forms[f"{case_name}"] = raw
        forms[f"{case_name}/utf-16-le"] = cased.encode("utf-16-le")
        forms[f"{case_name}/utf-16-be"] = cased.encode("utf-16-be")
        forms[f"{case_name}/hex"] = raw.hex().encode()
        forms[f"{case_name}/url"] = quote(cased, safe="").encode()  # a URL or a query string in a log line
        forms[f"{case_name}/form"] = quote_plus(cased).encode()
        for shift in range(3):
            # A substring's base64 depends on its offset mod 3; drop the characters that mix in
            # neighbouring bytes, keep the stable middle.
            for encoder in (base64.b64encode, base64.urlsafe_b64encode):
                encoded = encoder(b"\0" * shift + raw)
                stable = encoded[(shift * 4 + 2) // 3 : -4]
                if len(stable) >= 8:
                    forms[f"{case_name}/{encoder.__name__}+{shift}"] = stable
    return forms


def find_leaks(blob: bytes, values: list[str]) -> list[str]:
    return [
        f"{value!r} as {form}" for value in values for form, needle in needle_forms(value).items() if needle in blob
    ]


def all_needles() -> list[str]:
    return [*MARKERS.values(), *EXTRA_NEEDLES]


# Every other free-text field a person's story can reach, for the whole-service scans (tests/leak_scenario.py).
MORE_MARKERS = {
    "incident_type": "Okapimarker ambush",
    "decline_note": "Axolotlmarker family asked us to wait",
    "close_note": "Pangolinmarker moved to Mardan",
    "withdraw_note": "Narwhalmarker relocated abroad",
    "consent_note": "Tapirmarker no longer agrees",
    "error_input": "Wombatmarker typed into the wrong box",
    "password": "Lemurmarker-correct-horse-9",
}


def marked_referral(**overrides: Any) -> dict[str, Any]:
    """A referral body with a marker in every personal field, shared with every partner scope."""
    return referral_body(
        subject__full_name=MARKERS["full_name"],
        subject__cnic=MARKERS["cnic"],
        subject__phone=MARKERS["phone"],
        subject__address=MARKERS["address"],
        subject__date_of_birth=MARKERS["date_of_birth"],
        incident__narrative=MARKERS["narrative"],
        consent={"given": True, "method": "written", "share": ["contact", "identity", "incident"]},
        **overrides,
    )
