"""C2SP signed notes and tlog-checkpoints: the signing side, with Ed25519 from `cryptography`.

https://c2sp.org/signed-note and https://c2sp.org/tlog-checkpoint. Parsing and verification (verifier
keys, `open_note`, `Checkpoint`, `open_checkpoint`) live in `referral_service.audit.verifier`, the
file auditors run, and are re-exported here so the service verifies with the auditors' code.

Key strings are those of golang.org/x/mod/sumdb/note, so Go's tools read them:

* verifier key: `NAME+KEYID+BASE64(0x01 ‖ 32-byte public key)`, safe to publish;
* signer key: `PRIVATE+KEY+NAME+KEYID+BASE64(0x01 ‖ 32-byte seed)`, a secret, to be kept like any
  other key of the keyring.

where KEYID is 8 lowercase hex digits of SHA-256(NAME ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from referral_service.audit.verifier import (
    MAX_SIGNATURES,
    SIGNATURE_TYPE_ED25519,
    Checkpoint,
    CheckpointError,
    Note,
    NoteError,
    NoteSignature,
    VerificationError,
    VerifiedNote,
    VerifierKey,
    b64decode_strict,
    check_note_text,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    valid_key_name,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Note",
    "NoteError",
    "NoteSignature",
    "Signer",
    "VerifiedNote",
    "VerifierKey",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
]

_SEED_SIZE = 32
_SIGNER_PREFIX = ("PRIVATE", "KEY")


class Signer:
    """An Ed25519 note signer: a key name and a private key. Its repr never shows the key."""

    __slots__ = ("_private_key", "name", "verifier_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not valid_key_name(name):
            raise NoteError("key name must be non-empty, without spaces or '+'")
        self.name = name
        self._private_key = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier_key = VerifierKey(name, public)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key (from the operating system's CSPRNG, through `cryptography`)."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """The signer for a 32-byte Ed25519 seed (RFC 8032 private key), e.g. one kept in the keyring."""
        if len(seed) != _SEED_SIZE:
            raise NoteError("an Ed25519 private key seed is 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_string(cls, skey: str) -> Signer:
        """Read a signer key string `PRIVATE+KEY+NAME+KEYID+BASE64(0x01 ‖ seed)`.

        The key ID must be the one the name and the derived public key give, so a string whose
        parts were mixed up is refused. Error messages never quote the string.
        """
        # Only the base64 may hold '+'.
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or tuple(parts[:2]) != _SIGNER_PREFIX:
            raise NoteError("a signer key is PRIVATE+KEY+NAME+KEYID+BASE64")
        name, hex_id, key64 = parts[2:]
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise NoteError("a signer key's key ID is 8 lowercase hex digits")
        try:
            raw = b64decode_strict(key64, "signer key")
        except VerificationError:
            raise NoteError("a signer key's key is not canonical base64") from None
        if len(raw) != 1 + _SEED_SIZE or raw[0] != SIGNATURE_TYPE_ED25519:
            raise NoteError("only Ed25519 signer keys (type 0x01 and a 32-byte seed) are supported")
        signer = cls.from_seed(name, raw[1:])
        if signer.key_id != int(hex_id, 16):
            raise NoteError("the signer key's key ID does not match its name and public key")
        return signer

    @property
    def key_id(self) -> int:
        return self.verifier_key.key_id

    def seed(self) -> bytes:
        """The 32-byte private key seed: a secret."""
        return self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def to_string(self) -> str:
        """The signer key string `PRIVATE+KEY+NAME+KEYID+BASE64(0x01 ‖ seed)`: a secret."""
        encoded = base64.b64encode(bytes([SIGNATURE_TYPE_ED25519]) + self.seed()).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{encoded}"

    def sign(self, text: str) -> NoteSignature:
        """This key's signature of a note text (which must end in a newline)."""
        check_note_text(text)
        return NoteSignature(self.name, self.key_id, self._private_key.sign(text.encode("utf-8")))

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key_id={self.key_id:08x})"


def sign_note(text: str, signers: Signer | Sequence[Signer], keep: Sequence[NoteSignature] = ()) -> str:
    """The signed note: `text`, a blank line, and a signature line per signer.

    `keep` are signature lines already on the note (cosignatures, say) to carry over before the new
    ones; a kept line by one of `signers`' keys is replaced by the new signature.
    """
    check_note_text(text)
    signer_list = [signers] if isinstance(signers, Signer) else list(signers)
    if not signer_list:
        raise NoteError("a note needs at least one signer")
    ids = [(s.name, s.key_id) for s in signer_list]
    if len(set(ids)) != len(ids):
        raise NoteError("each key signs a note once")
    kept = [sig for sig in keep if (sig.name, sig.key_id) not in ids]
    if len(kept) + len(signer_list) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    signatures = kept + [signer.sign(text) for signer in signer_list]
    return text + "\n" + "".join(sig.line() for sig in signatures)


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed checkpoint note. The signer's key name must be the checkpoint's origin.

    tlog-checkpoint says a log's key name SHOULD match its origin; `open_checkpoint` expects it by
    default, so a log that signed otherwise would publish checkpoints its auditors reject.
    """
    if signer.name != checkpoint.origin:
        raise CheckpointError(f"the signer {signer.name!r} is not the checkpoint's origin {checkpoint.origin!r}")
    return sign_note(checkpoint.text, signer)
