"""Field encryption under a per-subject data key (DEK).

Ciphertext format, version 1 (all lengths fixed, so the header needs no delimiters)::

    0      1                 17                 49            61
    | 0x01 | key id (16 B)   | commitment (32 B) | nonce (12 B) | AES-256-GCM ciphertext + tag |

* The DEK is never used directly: one HKDF-SHA256 call derives an encryption key and a commitment
  key from it. The commitment (HMAC-SHA256 of version and key id under the commitment key, a
  per-key constant computed once) makes the ciphertext open under exactly one key, which plain GCM
  does not guarantee: a second key would need the same HMAC output. The header, commitment
  included, is part of the GCM associated data.
* The associated data binds the ciphertext to where it lives: table, column, row id, owning
  subject and key id, length-prefixed so no two contexts can encode to the same bytes. A value
  copied to another row, column or table, or left behind after its owner column is rewritten,
  fails authentication.
* There is no plaintext fallback: anything without a valid version-1 header is an error.
* Nonces are random: a data key encrypts one subject's handful of fields, far below the 2^32
  messages per key at which random 96-bit GCM nonces start to risk a repeat.
"""

from __future__ import annotations

import hmac
import os
import struct
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
_KEY_ID_LEN = 16
_COMMIT_LEN = 32
_NONCE_LEN = 12
HEADER_LEN = 1 + _KEY_ID_LEN + _COMMIT_LEN + _NONCE_LEN
_AAD_DOMAIN = b"referral-service/field/v1"


class CryptoError(Exception):
    """Base of every crypto failure; messages never carry key or plaintext material."""


class DecryptionError(CryptoError):
    """Ciphertext is malformed, tampered with, misplaced, or under another key."""


class SubjectErased(CryptoError):
    """The subject's data key was destroyed (crypto-shredding): the data is gone for good."""


class DamagedRecord(SubjectErased, DecryptionError):
    """A stored data key or field that does not open although the keyring passed its start-up check.

    Names where it lives (ids, table, column) and what failed, never any content. It is also a
    `SubjectErased`: code that only skips what it cannot read (duplicate matching, re-indexing)
    skips a damaged record the same way instead of failing the request; code that shows data
    catches `DamagedRecord` first, so people see "damaged", not "erased".
    """

    def __init__(self, *, table: str, column: str, row_id: str, subject_id: str, reason: str) -> None:
        super().__init__(f"damaged record: {table}.{column} row {row_id} ({reason})")
        self.table = table
        self.column = column
        self.row_id = row_id
        self.subject_id = subject_id
        self.reason = reason


def encode_parts(*parts: bytes | str) -> bytes:
    """Canonical, injective encoding: each part as a 4-byte big-endian length then its bytes."""
    out = []
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(struct.pack(">I", len(raw)))
        out.append(raw)
    return b"".join(out)


@dataclass(frozen=True)
class FieldContext:
    """Where a ciphertext lives; every part is authenticated."""

    table: str
    column: str
    row_id: str
    owner_id: str

    def aad(self, key_id: bytes) -> bytes:
        return encode_parts(_AAD_DOMAIN, self.table, self.column, self.row_id, self.owner_id, key_id)


class DataKey:
    """An unwrapped data key; derives its sub-keys once."""

    __slots__ = ("_aead", "_commitment", "key_id")

    def __init__(self, key_id: uuid.UUID, material: bytes) -> None:
        if len(material) != 32:
            raise CryptoError("data key must be 32 bytes")
        self.key_id = key_id
        # One HKDF call yields both sub-keys: a data key is unwrapped once per subject per request.
        derived = _derive(material)
        self._aead = AESGCM(derived[:32])
        self._commitment = hmac.digest(derived[32:], bytes([VERSION]) + key_id.bytes, "sha256")

    @classmethod
    def generate(cls) -> tuple[DataKey, bytes]:
        material = AESGCM.generate_key(bit_length=256)
        return cls(uuid.uuid4(), material), material

    @property
    def commitment(self) -> bytes:
        return self._commitment

    def __repr__(self) -> str:  # never show key material, even in a debugger or a log
        return f"DataKey({self.key_id})"


def _derive(material: bytes) -> bytes:
    """64 bytes: the AES-256-GCM key, then the commitment key."""
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"referral-service/dek/enc+commit/v1").derive(
        material
    )


class FieldCipher:
    """Encrypts and decrypts single fields under a `DataKey`, bound to a `FieldContext`."""

    def encrypt(self, key: DataKey, plaintext: str, context: FieldContext) -> bytes:
        key_id = key.key_id.bytes
        nonce = os.urandom(_NONCE_LEN)
        commitment = key.commitment
        header = bytes([VERSION]) + key_id + commitment + nonce
        body = key._aead.encrypt(nonce, plaintext.encode("utf-8"), header + context.aad(key_id))
        return header + body

    def decrypt(self, key: DataKey, ciphertext: bytes | memoryview, context: FieldContext) -> str:
        ciphertext = bytes(ciphertext)  # drivers may hand back a memoryview
        if len(ciphertext) < HEADER_LEN + 16 or ciphertext[0] != VERSION:
            raise DecryptionError("not a version-1 field ciphertext")
        key_id = ciphertext[1 : 1 + _KEY_ID_LEN]
        commitment = ciphertext[1 + _KEY_ID_LEN : 1 + _KEY_ID_LEN + _COMMIT_LEN]
        nonce = ciphertext[HEADER_LEN - _NONCE_LEN : HEADER_LEN]
        if key_id != key.key_id.bytes:
            raise DecryptionError("ciphertext names another data key")
        if not hmac.compare_digest(key.commitment, commitment):
            raise DecryptionError("key commitment does not match")
        try:
            plain = key._aead.decrypt(nonce, ciphertext[HEADER_LEN:], ciphertext[:HEADER_LEN] + context.aad(key_id))
        except InvalidTag:
            raise DecryptionError("authentication failed: tampered or misplaced ciphertext") from None
        return plain.decode("utf-8")

    @staticmethod
    def key_id_of(ciphertext: bytes) -> uuid.UUID:
        if len(ciphertext) < HEADER_LEN or ciphertext[0] != VERSION:
            raise DecryptionError("not a version-1 field ciphertext")
        return uuid.UUID(bytes=ciphertext[1 : 1 + _KEY_ID_LEN])
