"""Blind indexes: bounded leakage, normalisation before hashing, keys per column and version."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest

from referral_service.crypto.blind_index import (
    BITS,
    PLANNED_ROWS,
    BlindIndexer,
    bounds_hold,
    expected_matches_per_value,
    format_cnic,
    normalise_cnic,
    normalise_phone,
)
from referral_service.crypto.keyring import FileKeyring, create_keyring


@pytest.fixture
def keys(tmp_path: Path) -> FileKeyring:
    create_keyring(tmp_path / "keyring.json")
    return FileKeyring(tmp_path / "keyring.json")


def test_truncation_keeps_several_subjects_per_index_value_at_the_planned_scale() -> None:
    # CipherSweet's rule: C = R / 2^L with 2 <= C < sqrt(R).
    c = PLANNED_ROWS / 2**BITS
    assert c == expected_matches_per_value()
    assert 2 <= c < math.sqrt(PLANNED_ROWS)
    assert bounds_hold()


@pytest.mark.parametrize(
    ("rows", "bits", "holds"),
    [
        (1_000_000, 16, True),
        (1_000_000, 20, False),  # under 1 match per value: an index value would pin down a person
        (1_000_000, 8, False),  # ~3,906 per value > sqrt(R): lookups degrade to a scan
        (10_000, 12, True),
    ],
)
def test_bounds_check_rejects_too_many_and_too_few_bits(rows: int, bits: int, holds: bool) -> None:
    assert bounds_hold(rows, bits) is holds


def test_index_values_fill_the_bits_and_collide_as_planned(keys: FileKeyring) -> None:
    indexer = BlindIndexer(keys)
    rng = random.Random(7)
    rows = 4 * 2**BITS  # enough subjects that every value should be shared by about four
    values = Counter(indexer.index("cnic", f"{rng.randrange(10**12, 10**13)}") for _ in range(rows))
    assert all(0 <= v < 2**BITS for v in values)
    assert len(values) > 0.95 * 2**BITS
    assert max(values.values()) < 25  # no value concentrates subjects
    assert sum(values.values()) / len(values) >= 2


@pytest.mark.parametrize("form", ["17301-1234567-2", "1730112345672", " 17301-1234567-2 ", "17301-12345672"])
def test_cnic_with_or_without_dashes_gives_the_same_index(keys: FileKeyring, form: str) -> None:
    indexer = BlindIndexer(keys)
    assert normalise_cnic(form) == "1730112345672"
    assert format_cnic(form) == "17301-1234567-2"
    assert indexer.index("cnic", form) == indexer.index("cnic", "17301-1234567-2")


@pytest.mark.parametrize(
    "form",
    [
        "03001234567",
        "+923001234567",
        "00923001234567",
        "+92 300 1234567",
        "0300-1234567",
        "(0300) 123 4567",
        "0092 300 1234567",
    ],
)
def test_phone_in_local_international_or_00_form_gives_the_same_index(keys: FileKeyring, form: str) -> None:
    indexer = BlindIndexer(keys)
    assert normalise_phone(form) == "+923001234567"
    assert indexer.index("phone", form) == indexer.index("phone", "+923001234567")


@pytest.mark.parametrize(
    ("column", "form", "normal"),
    [
        ("cnic", "۱۷۳۰۱-۱۲۳۴۵۶۷-۲", "1730112345672"),  # Urdu (Extended Arabic-Indic) digits, U+06F0..U+06F9
        ("cnic", "١٧٣٠١١٢٣٤٥٦٧٢", "1730112345672"),  # Arabic-Indic digits, U+0660..U+0669
        ("cnic", "17301-１２３４５６７-2", "1730112345672"),  # full-width digits among ASCII ones
        ("cnic", "\u200e17301-1234567-2\u200f", "1730112345672"),  # direction marks from a right-to-left paste
        ("phone", "+۹۲ ۳۰۰ ۱۲۳۴۵۶۷", "+923001234567"),
        ("phone", "٠٣٠٠-١٢٣٤٥٦٧", "+923001234567"),
        ("phone", "\u202a+92 300 1234567\u202c", "+923001234567"),
    ],
)
def test_digits_of_any_script_are_read_as_ascii_and_index_alike(
    keys: FileKeyring, column: str, form: str, normal: str
) -> None:
    normalise = normalise_cnic if column == "cnic" else normalise_phone
    assert normalise(form) == normal
    indexer = BlindIndexer(keys)
    assert indexer.index(column, form) == indexer.index(column, normal)


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("cnic", "1234"),
        ("cnic", "17301-1234567-22"),
        ("cnic", "abcde-fghijkl-m"),
        ("phone", "99999"),
        ("phone", "+92777"),
        ("phone", "call me"),
    ],
)
def test_malformed_values_are_refused_before_hashing(keys: FileKeyring, column: str, bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        BlindIndexer(keys).index(column, bad)
    assert bad not in str(caught.value)  # the message never echoes the value


def test_index_keys_differ_per_version_and_per_keyring(keys: FileKeyring, tmp_path: Path) -> None:
    create_keyring(tmp_path / "other.json")
    other = FileKeyring(tmp_path / "other.json")
    samples = [f"{n:013d}" for n in range(1_000_000_000_000, 1_000_000_000_200)]
    v1, v2, foreign = BlindIndexer(keys, 1), BlindIndexer(keys, 2), BlindIndexer(other, 1)
    same_v = sum(v1.index("cnic", s) == v2.index("cnic", s) for s in samples)
    same_k = sum(v1.index("cnic", s) == foreign.index("cnic", s) for s in samples)
    assert same_v < 5 and same_k < 5  # chance collisions only: 200 / 65536 expected
    assert BlindIndexer(keys, 1).index("cnic", samples[0]) == v1.index("cnic", samples[0])
