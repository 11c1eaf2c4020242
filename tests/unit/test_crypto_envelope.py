"""The field envelope: round trip, tamper evidence, binding to place and key, nonce uniqueness."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from referral_service.crypto.envelope import (
    HEADER_LEN,
    VERSION,
    CryptoError,
    DataKey,
    DecryptionError,
    FieldCipher,
    FieldContext,
    encode_parts,
)

CIPHER = FieldCipher()
SUBJECT = "0b7c2f4e-9a51-4c1e-8f0e-2d3b4a5c6d7e"
HERE = FieldContext("subjects", "full_name", SUBJECT, SUBJECT)
SECRET = "Zarmeena Khattak — ضلع پشاور"
_NONCE_AT = HEADER_LEN - 12


@pytest.fixture
def key() -> DataKey:
    return DataKey.generate()[0]


def test_round_trip_returns_the_plaintext_including_non_ascii(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    assert SECRET.encode() not in sealed
    assert CIPHER.decrypt(key, sealed, HERE) == SECRET
    assert CIPHER.decrypt(key, memoryview(sealed), HERE) == SECRET
    assert CIPHER.decrypt(key, CIPHER.encrypt(key, "", HERE), HERE) == ""


def test_ciphertext_carries_version_byte_and_key_id(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    assert sealed[0] == VERSION
    assert FieldCipher.key_id_of(sealed) == key.key_id
    assert len(sealed) == HEADER_LEN + len(SECRET.encode()) + 16


def test_same_plaintext_encrypts_differently_each_time(key: DataKey) -> None:
    assert CIPHER.encrypt(key, SECRET, HERE) != CIPHER.encrypt(key, SECRET, HERE)


def test_one_flipped_bit_anywhere_fails(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, "a short secret", HERE)
    for position in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[position] ^= bit
            with pytest.raises(DecryptionError):
                CIPHER.decrypt(key, bytes(tampered), HERE)


@pytest.mark.parametrize(
    "elsewhere",
    [
        pytest.param(FieldContext("subjects", "full_name", "another-row", SUBJECT), id="row swap"),
        pytest.param(FieldContext("subjects", "address", SUBJECT, SUBJECT), id="column swap"),
        pytest.param(FieldContext("referrals", "full_name", SUBJECT, SUBJECT), id="table swap"),
        pytest.param(FieldContext("subjects", "full_name", SUBJECT, "another-owner"), id="owner rewrite"),
    ],
)
def test_ciphertext_moved_to_another_place_fails(key: DataKey, elsewhere: FieldContext) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    with pytest.raises(DecryptionError, match="authentication failed"):
        CIPHER.decrypt(key, sealed, elsewhere)


def test_context_parts_cannot_be_shifted_across_boundaries(key: DataKey) -> None:
    # Without length prefixes ("subjects", "x|y") and ("subjects|x", "y") could encode alike.
    assert encode_parts("ab", "c") != encode_parts("a", "bc")
    assert encode_parts("a", "") != encode_parts("a")
    sealed = CIPHER.encrypt(key, SECRET, FieldContext("subjects", "full_name", "r1", "o1"))
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(key, sealed, FieldContext("subjects", "full_namer", "1", "o1"))


def test_stripped_header_is_refused_not_read_as_plaintext(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    for stripped in (sealed[HEADER_LEN:], sealed[1:], SECRET.encode(), b"", bytes([VERSION]) + sealed[HEADER_LEN:]):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(key, stripped, HERE)


def test_unknown_format_version_is_refused(key: DataKey) -> None:
    sealed = bytearray(CIPHER.encrypt(key, SECRET, HERE))
    sealed[0] = 2
    with pytest.raises(DecryptionError, match="not a version-1"):
        CIPHER.decrypt(key, bytes(sealed), HERE)


def test_truncated_ciphertext_fails_at_every_length(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    for length in range(len(sealed)):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(key, sealed[:length], HERE)


def test_appended_bytes_fail(key: DataKey) -> None:
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(key, CIPHER.encrypt(key, SECRET, HERE) + b"\x00", HERE)


def test_another_data_key_cannot_open_it(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    with pytest.raises(DecryptionError, match="another data key"):
        CIPHER.decrypt(DataKey.generate()[0], sealed, HERE)


def test_substituted_key_with_forged_key_id_fails_on_the_commitment(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    impostor = DataKey(key.key_id, os.urandom(32))  # same id bytes, other material
    with pytest.raises(DecryptionError, match="commitment"):
        CIPHER.decrypt(impostor, sealed, HERE)


def test_ciphertext_under_another_key_relabelled_with_our_key_id_fails(key: DataKey) -> None:
    other = DataKey.generate()[0]
    sealed = bytearray(CIPHER.encrypt(other, SECRET, HERE))
    sealed[1:17] = key.key_id.bytes  # an attacker rewrites the key id to ours
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(key, bytes(sealed), HERE)


def test_commitment_is_checked_before_the_aead(key: DataKey) -> None:
    # A wrong commitment is reported as such, so a key substitution never reaches GCM at all.
    sealed = bytearray(CIPHER.encrypt(key, SECRET, HERE))
    sealed[17] ^= 1
    with pytest.raises(DecryptionError, match="commitment"):
        CIPHER.decrypt(key, bytes(sealed), HERE)


def test_data_key_material_must_be_32_bytes_and_never_shows_in_repr() -> None:
    with pytest.raises(CryptoError):
        DataKey(uuid.uuid4(), b"short")
    key, material = DataKey.generate()
    assert len(material) == 32
    assert material.hex() not in repr(key) and str(key.key_id) in repr(key)


def test_error_messages_carry_no_plaintext_or_context(key: DataKey) -> None:
    sealed = CIPHER.encrypt(key, SECRET, HERE)
    with pytest.raises(DecryptionError) as caught:
        CIPHER.decrypt(key, sealed, FieldContext("subjects", "full_name", "row-9", SUBJECT))
    assert SECRET not in str(caught.value) and "row-9" not in str(caught.value)


def test_no_nonce_repeats_in_a_million_encryptions_under_one_key(key: DataKey) -> None:
    # 10^6 as the issue demands; nonces are read back from the ciphertext headers.
    started = time.perf_counter()
    encrypt = CIPHER.encrypt
    nonces = {encrypt(key, "x", HERE)[_NONCE_AT:HEADER_LEN] for _ in range(1_000_000)}
    assert len(nonces) == 1_000_000
    assert all(len(n) == 12 for n in list(nonces)[:10])
    elapsed = time.perf_counter() - started
    print(f"10^6 encryptions in {elapsed:.1f}s")
