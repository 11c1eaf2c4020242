"""Key-encryption keys (KEKs) and the blind-index root key.

`KeyProvider` is the seam a KMS slots into. A KMS adapter implements the five methods:
`wrap_dek`/`unwrap_dek` become the KMS's Encrypt/Decrypt calls (the KEK id is the KMS key's ARN or
version name, and the `_wrap_aad` bytes go in as the encryption context), `active_kek_id`/`kek_ids`
list the KMS key versions, and `derive_secret` is a KMS-held HMAC key's GenerateMac over the purpose
string. The process then never holds a KEK. Pass the adapter to `bootstrap(settings, keys=...)`;
nothing else changes. `FileKeyring` is the file-backed provider used by the embedded profile and by
deployments that keep the keyring on a mounted secret volume.

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
import fcntl
import hmac
import json
import os
import secrets
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from referral_service.crypto.envelope import CryptoError, DecryptionError, encode_parts

FORMAT = "referral-service-keyring"
_WRAP_DOMAIN = b"referral-service/dek-wrap/v1"


class KeyringError(CryptoError):
    """The keyring is missing, malformed or wrong; the message is one operator-facing line."""


class WrappedKeyDoesNotOpen(KeyringError, DecryptionError):
    """A wrapped data key fails authentication under its KEK.

    On its own the keyring cannot tell a wrong KEK from a damaged row, so this is both. Start-up
    (`services.keys.verify_keys`) proves each KEK against a canary of its own; after that, the
    callers treat this as one damaged record, not as a wrong keyring.
    """


class KeyProvider(Protocol):
    def active_kek_id(self) -> str: ...

    def kek_ids(self) -> list[str]: ...

    def wrap_dek(self, material: bytes, *, subject_id: str, key_id: uuid.UUID) -> tuple[str, bytes]: ...

    def unwrap_dek(self, kek_id: str, wrapped: bytes, *, subject_id: str, key_id: uuid.UUID) -> bytes:
        """Raises `DecryptionError` (e.g. `WrappedKeyDoesNotOpen`) when `wrapped` does not open,
        `KeyringError` when the KEK is unknown or unreachable."""
        ...

    def derive_secret(self, purpose: str) -> bytes: ...


def _wrap_aad(subject_id: str, key_id: uuid.UUID, kek_id: str) -> bytes:
    return encode_parts(_WRAP_DOMAIN, subject_id, key_id.bytes, kek_id)


def _b64key(value: Any, what: str) -> bytes:
    if value is None:
        raise KeyringError(f"REFERRAL_KEYRING: {what} is missing")
    if not isinstance(value, str):
        raise KeyringError(f"REFERRAL_KEYRING: {what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise KeyringError(f"REFERRAL_KEYRING: {what} is not valid base64") from None
    if len(raw) != 32:
        raise KeyringError(f"REFERRAL_KEYRING: {what} must be 32 bytes, found {len(raw)}")
    return raw


class _State(NamedTuple):
    """One consistent view of the file, swapped in whole so readers never see half a reload."""

    stamp: tuple[int, int, int]
    active: str
    keks: dict[str, AESGCM]
    root: bytes


_WRAPPED_LEN = 12 + 32 + 16  # nonce + DEK + GCM tag


class FileKeyring:
    """Keyring read from a JSON file; picks up rotations made by other processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._path = str(self.path)  # os.stat on a str: this runs on every wrap, so every intake
        self._lock = threading.Lock()
        self._state = self._load()

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> _State:
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
        # `active` is checked for str first: an unhashable value (a list) would make `in` raise TypeError.
        if not isinstance(keks, dict) or not keks or not isinstance(active, str) or active not in keks:
            raise KeyringError(f"REFERRAL_KEYRING: {self.path} has no active key-encryption key")
        loaded: dict[str, AESGCM] = {}
        for kek_id, entry in keks.items():
            if not isinstance(entry, dict):
                raise KeyringError(f"REFERRAL_KEYRING: entry {kek_id} is malformed")
            loaded[kek_id] = AESGCM(_b64key(entry.get("key"), f"key {kek_id}"))
        if keks[active].get("retired"):
            raise KeyringError(f"REFERRAL_KEYRING: the active key {active} is marked retired")
        root = _b64key(data.get("root"), "root key")
        return _State(_stamp(stat), active, loaded, root)

    def refresh(self) -> None:
        """Re-read the file if another process (e.g. `keys rotate`) replaced it."""
        try:
            stamp = _stamp(os.stat(self._path))
        except OSError:
            return  # keep serving with the keys already loaded
        if stamp != self._state.stamp:
            with self._lock:
                if stamp != self._state.stamp:
                    state = self._load()
                    if not hmac.compare_digest(state.root, self._state.root):
                        # Blind-index keys and fingerprints hang off the root: a new root under a
                        # running process would silently break every lookup.
                        raise KeyringError(f"REFERRAL_KEYRING: the root key in {self.path} changed; restart")
                    self._state = state

    # -- KeyProvider -------------------------------------------------------------------------
    def active_kek_id(self) -> str:
        self.refresh()
        return self._state.active

    def kek_ids(self) -> list[str]:
        self.refresh()
        return sorted(self._state.keks)

    def wrap_dek(self, material: bytes, *, subject_id: str, key_id: uuid.UUID) -> tuple[str, bytes]:
        self.refresh()
        state = self._state
        nonce = os.urandom(12)
        aad = _wrap_aad(subject_id, key_id, state.active)
        return state.active, nonce + state.keks[state.active].encrypt(nonce, material, aad)

    def unwrap_dek(self, kek_id: str, wrapped: bytes, *, subject_id: str, key_id: uuid.UUID) -> bytes:
        if kek_id not in self._state.keks:
            self.refresh()
        kek = self._state.keks.get(kek_id)
        if kek is None:
            raise KeyringError(f"REFERRAL_KEYRING: key-encryption key {kek_id} is not in the keyring")
        wrapped = bytes(wrapped)
        if len(wrapped) != _WRAPPED_LEN:
            raise DecryptionError("a wrapped data key has the wrong length")
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], _wrap_aad(subject_id, key_id, kek_id))
        except InvalidTag:
            raise WrappedKeyDoesNotOpen(
                f"REFERRAL_KEYRING: key-encryption key {kek_id} does not open its data keys (wrong keyring?)"
            ) from None

    def derive_secret(self, purpose: str) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"referral-service/root/" + purpose.encode()
        ).derive(self._state.root)


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    # Inode too: an atomic replace within one mtime tick still shows up as a new file.
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


# -- file management (CLI) ---------------------------------------------------------------------
def _new_kek_id() -> str:
    return f"kek-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def _new_entry() -> dict[str, Any]:
    return {
        "key": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
        "created_at": datetime.now(UTC).isoformat(),
        "retired": False,
    }


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Serialise keyring edits (two `keys rotate` at once would each drop the other's new KEK)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomically(path: Path, data: dict[str, Any], *, exclusive: bool = False) -> None:
    """Write a temporary file and swap it in, so a reader never sees half a keyring.

    `exclusive` links instead of replacing: it fails if the target exists, even if it appeared a
    moment ago, so a new keyring can never clobber one that holds the only copy of live KEKs.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder made for the keyring is private
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyringError(f"REFERRAL_KEYRING: {path} already exists; refusing to overwrite it") from None
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
        exclusive=True,
    )
    return kek_id


def add_active_kek(path: Path) -> str:
    """Add a fresh KEK and make it active; old KEKs stay until retired."""
    path = Path(path)
    with _exclusive(path):
        FileKeyring(path)  # validates the file before we touch it
        data = json.loads(path.read_text())
        kek_id = _new_kek_id()
        while kek_id in data["keks"]:
            kek_id = _new_kek_id()
        data["keks"][kek_id] = _new_entry()
        data["active"] = kek_id
        _write_atomically(path, data)
    return kek_id


def retire_kek(path: Path, kek_id: str) -> None:
    """Remove a KEK's material from the keyring (call only when no data key uses it)."""
    path = Path(path)
    with _exclusive(path):
        FileKeyring(path)
        data = json.loads(path.read_text())
        if kek_id not in data["keks"]:
            raise KeyringError(f"REFERRAL_KEYRING: no key {kek_id} in the keyring")
        if data["active"] == kek_id:
            raise KeyringError(f"REFERRAL_KEYRING: {kek_id} is the active key; rotate first")
        del data["keks"][kek_id]
        _write_atomically(path, data)
