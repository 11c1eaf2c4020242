"""Keyed blind indexes for exact-match lookups on CNIC and phone.

An index value is HMAC-SHA256(column key, normalised value) truncated to `BITS` bits. Column keys
are derived with HKDF from the keyring's root key, one per (column, index key version), so a
value's index differs between columns and between key versions.

Truncation is deliberate (CipherSweet's bounded-leakage rule): with `PLANNED_ROWS` subjects, each
index value is expected to match C = R / 2^BITS subjects, with 2 <= C < sqrt(R). An index value
therefore never pins down one person; candidates are confirmed by decrypting and comparing.
"""

from __future__ import annotations

import hmac
import math
import re
import unicodedata

from referral_service.crypto.keyring import KeyProvider

PLANNED_ROWS = 1_000_000
BITS = 16
INDEXED_COLUMNS = ("cnic", "phone")


def expected_matches_per_value(rows: int = PLANNED_ROWS, bits: int = BITS) -> float:
    return rows / 2**bits


def bounds_hold(rows: int = PLANNED_ROWS, bits: int = BITS) -> bool:
    c = expected_matches_per_value(rows, bits)
    return 2 <= c < math.sqrt(rows)


# ASCII digits only: Python's \d also matches Urdu, Arabic-Indic and every other decimal digit, which
# would let "۱۷۳۰۱…" through unchanged and index it apart from the same CNIC typed in ASCII.
_CNIC = re.compile(r"^([0-9]{5})-?([0-9]{7})-?([0-9])$")
_PHONE_CHARS = re.compile(r"[\s\-().]")


def ascii_digits(value: str) -> str:
    """Every Unicode decimal digit (Urdu ۰-۹, Arabic-Indic ٠-٩, full-width…) as its ASCII digit, and
    invisible format characters (direction marks a right-to-left copy and paste brings along) dropped."""
    return "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in value if unicodedata.category(ch) != "Cf"
    )


def normalise_cnic(value: str) -> str:
    """`12345-1234567-1` or `1234512345671` (in any script's digits) → `1234512345671`; ValueError otherwise."""
    match = _CNIC.match(ascii_digits(value).strip())
    if not match:
        raise ValueError("CNIC must be 13 digits as #####-#######-#")
    return "".join(match.groups())


def format_cnic(value: str) -> str:
    digits = normalise_cnic(value)
    return f"{digits[:5]}-{digits[5:12]}-{digits[12]}"


def normalise_phone(value: str) -> str:
    """E.164 for Pakistan: `+92 300 1234567`, `0092…`, `0300…` (in any script's digits) → `+923001234567`."""
    raw = _PHONE_CHARS.sub("", ascii_digits(value).strip())
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    elif raw.startswith("0") and len(raw) == 11:
        raw = "+92" + raw[1:]
    if not re.fullmatch(r"\+[1-9][0-9]{7,14}", raw):
        raise ValueError("phone must be in international form, e.g. +923001234567")
    if raw.startswith("+92") and not re.fullmatch(r"\+92[0-9]{9,10}", raw):
        raise ValueError("a Pakistani number is +92 followed by 9 or 10 digits")
    return raw


_NORMALISERS = {"cnic": normalise_cnic, "phone": normalise_phone}


class BlindIndexer:
    def __init__(self, keys: KeyProvider, version: int = 1) -> None:
        self.version = version
        self._keys = {col: keys.derive_secret(f"blind-index/{col}/v{version}") for col in INDEXED_COLUMNS}

    def index(self, column: str, value: str) -> int:
        normalised = _NORMALISERS[column](value)
        digest = hmac.digest(self._keys[column], normalised.encode(), "sha256")
        return int.from_bytes(digest[:4], "big") >> (32 - BITS)
