"""Key-encryption keys (KEKs) and the blind-index root key.

`KeyProvider` is the seam a KMS slots into: production can implement `wrap_dek`/`unwrap_dek`
with a KMS's encrypt/decrypt calls and `derive_secret` from a KMS-held HMAC key, and never hold
a KEK in process memory. `FileKeyring` is the file-backed provider used by the embedded profile
and by deployments that keep the keyring on a mounted secret volume.

Keyring file (JSON, mode 0600)::

    {"format": "referral-service-keyring", "version": 1,
     "active": "kek-20261125T023000-1a2b",
     "keks": {"kek-…": {"key": "<base64 32 bytes>", "created_at": "…", "retired": false}},
     "root": "<base64 32 bytes>"}

DEKs are wrapped with AES-256-GCM under the KEK; the associated data names the subject and the
DEK id, so a wrapped key cannot be moved to another subject.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from referral_service.crypto.envelope import CryptoError, encode_parts

FORMAT = "referral-service-keyring"
_WRAP_DOMAIN = b"referral-service/dek-wrap/v1"


class KeyringError(CryptoError):
    """The keyring is missing, malformed or wrong; the message is one operator-facing line."""


class KeyProvider(Protocol):
    def active_kek_id(self) -> str: ...

    def kek_ids(self) -> list[str]: ...

    def wrap_dek(self, material: bytes, *, subject_id: str, key_id: uuid.UUID) -> tuple[str, bytes]: ...

    def unwrap_dek(self, kek_id: str, wrapped: bytes, *, subject_id: str, key_id: uuid.UUID) -> bytes: ...

    def derive_secret(self, purpose: str) -> bytes: ...


def _wrap_aad(subject_id: str, key_id: uuid.UUID, kek_id: str) -> bytes:
    return encode_parts(_WRAP_DOMAIN, subject_id, key_id.bytes, kek_id)


def _b64key(value: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise KeyringError(f"REFERRAL_KEYRING: {what} is not valid base64") from None
    if len(raw) != 32:
        raise KeyringError(f"REFERRAL_KEYRING: {what} must be 32 bytes, found {len(raw)}")
    return raw


class FileKeyring:
    """Keyring read from a JSON file; picks up rotations made by other processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._active = ""
        self._keks: dict[str, AESGCM] = {}
        self._retired: set[str] = set()
        self._root = b""
        self._load()

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            stat = self.path.stat()
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise KeyringError(
                f"REFERRAL_KEYRING: no keyring at {self.path} "
                "(run 'referral-service keys init' or 'referral-service init')"
            ) from None
        except (OSError, ValueError):
            raise KeyringError(f"REFERRAL_KEYRING: {self.path} is not a readable JSON keyring") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != 1:
            raise KeyringError(f"REFERRAL_KEYRING: {self.path} is not a referral-service keyring (version 1)")
        keks = data.get("keks")
        active = data.get("active")
        if not isinstance(keks, dict) or not keks or active not in keks:
            raise KeyringError(f"REFERRAL_KEYRING: {self.path} has no active key-encryption key")
        loaded: dict[str, AESGCM] = {}
        retired: set[str] = set()
        for kek_id, entry in keks.items():
            if not isinstance(entry, dict):
                raise KeyringError(f"REFERRAL_KEYRING: entry {kek_id} is malformed")
            loaded[kek_id] = AESGCM(_b64key(entry.get("key"), f"key {kek_id}"))
            if entry.get("retired"):
                retired.add(kek_id)
        if active in retired:
            raise KeyringError(f"REFERRAL_KEYRING: the active key {active} is marked retired")
        root = _b64key(data.get("root"), "root key")
        self._active, self._keks, self._retired, self._root = active, loaded, retired, root
        self._mtime = stat.st_mtime_ns

    def refresh(self) -> None:
        """Re-read the file if another process (e.g. `keys rotate`) changed it."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return  # keep serving with the keys already loaded
        if mtime != self._mtime:
            with self._lock:
                if mtime != self._mtime:
                    self._load()

    # -- KeyProvider -------------------------------------------------------------------------
    def active_kek_id(self) -> str:
        self.refresh()
        return self._active

    def kek_ids(self) -> list[str]:
        self.refresh()
        return sorted(self._keks)

    def wrap_dek(self, material: bytes, *, subject_id: str, key_id: uuid.UUID) -> tuple[str, bytes]:
        kek_id = self.active_kek_id()
        nonce = os.urandom(12)
        return kek_id, nonce + self._keks[kek_id].encrypt(nonce, material, _wrap_aad(subject_id, key_id, kek_id))

    def unwrap_dek(self, kek_id: str, wrapped: bytes, *, subject_id: str, key_id: uuid.UUID) -> bytes:
        if kek_id not in self._keks:
            self.refresh()
        kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyringError(f"REFERRAL_KEYRING: key-encryption key {kek_id} is not in the keyring")
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], _wrap_aad(subject_id, key_id, kek_id))
        except InvalidTag:
            raise KeyringError(
                f"REFERRAL_KEYRING: key-encryption key {kek_id} does not open its data keys (wrong keyring?)"
            ) from None

    def derive_secret(self, purpose: str) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"referral-service/root/" + purpose.encode()
        ).derive(self._root)


# -- file management (CLI) ---------------------------------------------------------------------
def _new_kek_id() -> str:
    return f"kek-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def _new_entry() -> dict[str, Any]:
    return {
        "key": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
        "created_at": datetime.now(UTC).isoformat(),
        "retired": False,
    }


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_keyring(path: Path) -> str:
    """Write a new keyring; refuses to overwrite one (that would orphan every data key)."""
    path = Path(path)
    if path.exists():
        raise KeyringError(f"REFERRAL_KEYRING: {path} already exists; refusing to overwrite it")
    kek_id = _new_kek_id()
    _write_atomically(
        path,
        {
            "format": FORMAT,
            "version": 1,
            "active": kek_id,
            "keks": {kek_id: _new_entry()},
            "root": base64.b64encode(secrets.token_bytes(32)).decode(),
        },
    )
    return kek_id


def add_active_kek(path: Path) -> str:
    """Add a fresh KEK and make it active; old KEKs stay until retired."""
    FileKeyring(path)  # validates the file before we touch it
    data = json.loads(Path(path).read_text())
    kek_id = _new_kek_id()
    while kek_id in data["keks"]:
        kek_id = _new_kek_id()
    data["keks"][kek_id] = _new_entry()
    data["active"] = kek_id
    _write_atomically(Path(path), data)
    return kek_id


def retire_kek(path: Path, kek_id: str) -> None:
    """Remove a KEK's material from the keyring (call only when no data key uses it)."""
    FileKeyring(path)
    data = json.loads(Path(path).read_text())
    if kek_id not in data["keks"]:
        raise KeyringError(f"REFERRAL_KEYRING: no key {kek_id} in the keyring")
    if data["active"] == kek_id:
        raise KeyringError(f"REFERRAL_KEYRING: {kek_id} is the active key; rotate first")
    del data["keks"][kek_id]
    _write_atomically(Path(path), data)
