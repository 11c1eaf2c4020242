"""The one door personal data passes through: envelope encryption, keyring, blind indexes.

Only vetted primitives from the `cryptography` package are used (AES-256-GCM, HKDF-SHA256,
HMAC-SHA256); this package composes them and owns the on-disk formats.
"""

from referral_service.crypto.blind_index import BlindIndexer, normalise_cnic, normalise_phone
from referral_service.crypto.envelope import (
    CryptoError,
    DamagedRecord,
    DataKey,
    DecryptionError,
    FieldCipher,
    FieldContext,
    SubjectErased,
)
from referral_service.crypto.keyring import FileKeyring, KeyProvider, KeyringError, WrappedKeyDoesNotOpen

__all__ = [
    "BlindIndexer",
    "CryptoError",
    "DamagedRecord",
    "DataKey",
    "DecryptionError",
    "FieldCipher",
    "FieldContext",
    "FileKeyring",
    "KeyProvider",
    "KeyringError",
    "SubjectErased",
    "WrappedKeyDoesNotOpen",
    "normalise_cnic",
    "normalise_phone",
]
