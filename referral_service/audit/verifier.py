"""The auditors' verifier for the referral service's audit log, in one file.

Auditors copy this file out of the service (or run `python -m referral_service.audit.verifier`) and
check what the service publishes with it. It depends on nothing but the Python standard library and
`cryptography` (for Ed25519), so it can be read in an afternoon and run far from the database host:

* RFC 9162 (Certificate Transparency v2) Merkle tree hashes: `leaf_hash` = SHA-256(0x00 ‖ entry),
  `node_hash` = SHA-256(0x01 ‖ left ‖ right); the root of all leaves; inclusion proofs
  (RFC 9162 §2.1.3.2) and consistency proofs (§2.1.4.2), verified with the RFC's own algorithms.
  These functions use only `hashlib`.
* C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 verifier keys
  `NAME+KEYID+BASE64(0x01 ‖ public key)`, and C2SP tlog-checkpoints (https://c2sp.org/tlog-checkpoint)
  carried in them: origin, tree size, root hash.
* `extends(old, new, proof)`: the log at the new checkpoint is the log at the old one plus entries
  appended after it; nothing before the old checkpoint was changed or removed.

The service builds on this module (`referral_service.audit.merkle` generates proofs over its stored
tree nodes, `referral_service.audit.note` signs), so the code the service checks itself with is the
code auditors run. Run `python verifier.py --help` for the command line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "SIGNATURE_TYPE_ED25519",
    "Checkpoint",
    "CheckpointError",
    "Note",
    "NoteError",
    "NoteSignature",
    "ProofError",
    "VerificationError",
    "VerifiedNote",
    "VerifierKey",
    "b64decode_strict",
    "check_note_text",
    "entry_bytes",
    "extends",
    "key_id",
    "leaf_hash",
    "main",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "valid_key_name",
    "verify_consistency",
    "verify_extends",
    "verify_inclusion",
    "verify_tree",
]

HASH_SIZE = 32
#: RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Tree sizes and indexes are uint64 in RFC 9162 and in the checkpoint format's readers.
MAX_TREE_SIZE = 2**64 - 1

#: The canonical bytes of an audit entry start with this, then one length-prefixed part per field.
ENTRY_FORMAT = b"referral-service/audit-entry/v1"

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class VerificationError(ValueError):
    """Something an auditor was given does not check out; the message says what."""


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof, or a recomputed root, is wrong."""


class NoteError(VerificationError):
    """A signed note or verifier key is malformed, or no trusted signature on it verifies."""


class CheckpointError(VerificationError):
    """A checkpoint body is malformed, or names another log."""


# -- RFC 9162 Merkle tree hashes -----------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The RFC 9162 root (MTH) of a tree with these leaf hashes, in one pass and O(log n) memory.

    Keeps the compact range of the leaves so far: one complete subtree per set bit of the count,
    merged as the count carries, then folds them right to left as MTH's split at the largest power
    of two does.
    """
    stack: list[bytes] = []
    for count, h in enumerate(leaf_hashes, start=1):
        _check_hash(h, "leaf hash")
        node = bytes(h)
        # Each trailing zero bit of the new count is a pair of equal subtrees to merge.
        carry = count
        while carry & 1 == 0:
            node = node_hash(stack.pop(), node)
            carry >>= 1
        stack.append(node)
    if not stack:
        return EMPTY_ROOT
    root = stack.pop()
    while stack:
        root = node_hash(stack.pop(), root)
    return root


def entry_bytes(
    *,
    entry_id: str,
    at: str,
    actor_bi: bytes,
    action_bi: bytes,
    referral_bi: bytes | None,
    subject_bi: bytes | None,
    record_ct: bytes,
    details_key: str,
    details_ct: bytes,
    commitment: bytes,
) -> bytes:
    """The canonical bytes of one audit entry, v1: what its leaf hash is taken over.

    `ENTRY_FORMAT`, then each field as a 4-byte big-endian length and its bytes, in this order:
    id (UUID text), at (RFC 3339 UTC with microseconds, `2026-12-01T11:38:48.575989Z`), the four
    blind indexes (an absent one is empty), the sealed record, the name of the key its details are
    sealed under (`audit` or `subject`), the sealed details and the keyed commitment. Only ciphertexts
    and keyed digests go in: nothing an attacker could guess and confirm, and destroying a subject's
    data key leaves the bytes, and so the tree, unchanged.
    """
    parts = (
        ENTRY_FORMAT,
        entry_id.encode("ascii"),
        at.encode("ascii"),
        actor_bi,
        action_bi,
        referral_bi or b"",
        subject_bi or b"",
        record_ct,
        details_key.encode("ascii"),
        details_ct,
        commitment,
    )
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte SHA-256 hash")


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{what} {value!r} is not a tree size or index (0 to 2^64-1)")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that an RFC 9162 inclusion proof of leaf hash `leaf` at `index` in a tree of `size` implies.

    The algorithm of RFC 9162 §2.1.3.2 (steps 1 to 4, plus the check that sn ends at 0 of step 5);
    raises `ProofError` for a proof that cannot be one for this index and size.
    """
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    _check_hash(leaf, "leaf hash")
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = bytes(leaf)
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long for this index and size")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short for this index and size")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check an RFC 9162 inclusion proof: leaf hash `leaf` is entry `index` of the tree of `size` with `root`.

    Returns nothing when it holds; raises `ProofError` saying why when it does not.
    """
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of entry {index} does not lead to the root of the tree of size {size}")


def root_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """The root of the tree of `size2` that an RFC 9162 consistency proof from (`size1`, `root1`) implies.

    The algorithm of RFC 9162 §2.1.4.2; it also checks the proof's claim about `root1`. Requires
    0 < size1 <= size2: a consistency proof from the empty tree proves nothing (every tree extends
    it), so, as in transparency-dev/merkle, it is refused rather than accepted vacuously; see
    `verify_extends` for checkpoints of an empty log. Raises `ProofError`.
    """
    _check_size(size1, "first tree size")
    _check_size(size2, "second tree size")
    if size1 > size2:
        raise ProofError(f"first tree size {size1} is larger than second tree size {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    for p in proof:
        _check_hash(p, "proof hash")
    if size1 == size2:
        if proof:
            raise ProofError("a consistency proof between equal tree sizes must be empty")
        return root1
    # Step 1.
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # Step 2.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Steps 3 to 6.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long for these sizes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is too short for these sizes")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of the tree of size {size1}")
    return sr


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check an RFC 9162 consistency proof: the tree (`size2`, `root2`) extends the tree (`size1`, `root1`).

    Returns nothing when it holds; raises `ProofError` saying why when it does not.
    """
    if root_from_consistency_proof(size1, size2, proof, root1) != root2:
        raise ProofError(f"consistency proof does not lead to the root of the tree of size {size2}")


# -- C2SP signed notes -----------------------------------------------------------------------------

#: c2sp.org/signed-note, "Signature types": 0x01 is Ed25519.
SIGNATURE_TYPE_ED25519 = 0x01
#: The spec asks verifiers to cap the signatures on a note, accepting at least 16.
MAX_SIGNATURES = 100
_ED25519_PUBLIC_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_KEY_ID_RE = re.compile(r"[0-9a-f]{8}")


def b64decode_strict(text: str, what: str = "base64") -> bytes:
    """Standard base64 (RFC 4648 §4) in its one canonical spelling, else `VerificationError`.

    Lenient decoders accept several spellings of the same bytes (non-zero padding bits, missing
    padding); accepting only the canonical one means any change to a signature or hash line changes
    the bytes, so no altered copy of a note verifies.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64")
    return raw


def valid_key_name(name: str) -> bool:
    """c2sp.org/signed-note: key names are non-empty, with no Unicode spaces and no plus sign."""
    return bool(name) and "+" not in name and not any(c.isspace() or ord(c) < 0x20 for c in name)


def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    """c2sp.org/signed-note key ID: the first 4 bytes, big-endian, of SHA-256(name ‖ 0x0A ‖ type ‖ key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 note verifier key, `NAME+KEYID+BASE64(0x01 ‖ 32-byte public key)` as a string."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise NoteError("key name must be non-empty, without spaces or '+'")
        if len(self.public_key) != _ED25519_PUBLIC_KEY_SIZE:
            raise NoteError("an Ed25519 public key is 32 bytes")
        object.__setattr__(self, "key_id", key_id(self.name, SIGNATURE_TYPE_ED25519, self.public_key))

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Read a verifier key string; its key ID must be the one its name and public key give."""
        # The name and key ID hold no '+'; the base64 may.
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is NAME+KEYID+BASE64")
        name, hex_id, key64 = parts
        if not _KEY_ID_RE.fullmatch(hex_id):
            raise NoteError("a verifier key's key ID is 8 lowercase hex digits")
        try:
            raw = b64decode_strict(key64, "verifier key")
        except VerificationError as exc:
            raise NoteError(str(exc)) from None
        if not raw or raw[0] != SIGNATURE_TYPE_ED25519:
            raise NoteError("only Ed25519 verifier keys (signature type 0x01) are supported")
        key = cls(name, raw[1:])
        if key.key_id != int(hex_id, 16):
            raise NoteError("the verifier key's key ID does not match its name and public key")
        return key

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([SIGNATURE_TYPE_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (without the key ID) is this key's Ed25519 signature of `message`."""
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: key name, key ID and the signature bytes after the key ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, `— NAME BASE64(KEYID ‖ signature)` and a newline."""
        encoded = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode("ascii")
        return f"{_SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A parsed but unverified signed note: its text (ending in a newline) and every signature line."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note with at least one signature by a trusted key that verified.

    `verified` are the trusted keys' signatures (all of them verified); `unknown` are signatures by
    keys the verifier was not given (witnesses, rotated keys), which the spec says to ignore.
    """

    text: str
    verified: tuple[NoteSignature, ...]
    unknown: tuple[NoteSignature, ...]


def _note_text(message: str | bytes) -> str:
    if isinstance(message, bytes | bytearray):
        try:
            message = bytes(message).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a signed note must be valid UTF-8") from None
    # A str from elsewhere may hold lone surrogates, which are not UTF-8.
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("a signed note must be valid UTF-8") from None
    return message


def check_note_text(text: str) -> None:
    """Raise `NoteError` unless `text` can be the text of a signed note (before its signatures)."""
    text = _note_text(text)
    if not text.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note must not contain control characters other than newline (no CR, no tab)")


def parse_note(message: str | bytes) -> Note:
    """Split a signed note into its text and signature lines, checking only the format.

    c2sp.org/signed-note: valid UTF-8, no control characters but newline (so no CRLF line endings),
    the text ends in a newline and is separated by the last blank line from one or more lines
    `— NAME BASE64(KEYID ‖ signature)`, each ending in a newline. Raises `NoteError`.
    """
    message = _note_text(message)
    if any(ord(c) < 0x20 and c != "\n" for c in message):
        raise NoteError("a note must not contain control characters other than newline (no CR, no tab)")
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("a note must have a blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("a note must end with signature lines, each ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash (U+2014) and a space")
        name, sep, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not sep or not valid_key_name(name):
            raise NoteError("a signature line is '— NAME BASE64' with a valid key name")
        try:
            raw = b64decode_strict(encoded, "signature")
        except VerificationError as exc:
            raise NoteError(str(exc)) from None
        if len(raw) < 5:
            raise NoteError("a signature is a 4-byte key ID and at least one byte of signature")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(signatures))


def open_note(message: str | bytes, keys: VerifierKey | Iterable[VerifierKey]) -> VerifiedNote:
    """Verify a signed note against trusted verifier keys and return its text and signatures.

    As c2sp.org/signed-note requires: signatures whose (name, key ID) is not a trusted key's are
    ignored; every signature by a trusted key must verify (one that does not rejects the whole note);
    at least one must. Raises `NoteError`; the text must not be used then.
    """
    trusted = [keys] if isinstance(keys, VerifierKey) else list(keys)
    by_id: dict[tuple[str, int], VerifierKey] = {}
    for key in trusted:
        if (key.name, key.key_id) in by_id and by_id[(key.name, key.key_id)] != key:
            raise NoteError(f"two trusted keys share the name and key ID {key.name}+{key.key_id:08x}")
        by_id[(key.name, key.key_id)] = key
    note = parse_note(message)
    data = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unknown: list[NoteSignature] = []
    for sig in note.signatures:
        signer = by_id.get((sig.name, sig.key_id))
        if signer is None:
            unknown.append(sig)
        elif signer.verify(data, sig.signature):
            verified.append(sig)
        else:
            raise NoteError(f"the signature by {sig.name}+{sig.key_id:08x} does not verify")
    if not verified:
        raise NoteError("the note carries no signature by a trusted key")
    return VerifiedNote(note.text, tuple(verified), tuple(unknown))


# -- C2SP tlog-checkpoint --------------------------------------------------------------------------

_TREE_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size and RFC 9162 root hash (and extension lines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("a checkpoint's origin is one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("a checkpoint's tree size is an integer from 0 to 2^64-1")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"a checkpoint's root hash is {HASH_SIZE} bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise CheckpointError("a checkpoint's extension lines are non-empty single lines")

    @property
    def text(self) -> str:
        """The note text: origin, decimal size, base64 root hash, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of a verified note). Raises `CheckpointError`."""
        if not text.endswith("\n"):
            raise CheckpointError("a checkpoint's text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("a checkpoint has an origin, a tree size and a root hash line")
        origin, size_line, root_line, *extensions = lines
        if not _TREE_SIZE_RE.fullmatch(size_line):
            raise CheckpointError("a checkpoint's tree size is decimal digits without leading zeros")
        try:
            root = b64decode_strict(root_line, "root hash")
        except VerificationError as exc:
            raise CheckpointError(str(exc)) from None
        return cls(origin, int(size_line), root, tuple(extensions))


def open_checkpoint(
    message: str | bytes, keys: VerifierKey | str | Iterable[VerifierKey], origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and return its body.

    `keys` is the trusted verifier key (or its string), or several. The origin must be `origin`,
    or, when that is not given, the name of the (single) trusted key: tlog-checkpoint says a log's
    key name SHOULD match its origin, and checking it means a checkpoint of another log signed with
    the same key is not taken for this one. Raises `NoteError` or `CheckpointError`.
    """
    if isinstance(keys, str):
        keys = VerifierKey.parse(keys)
    trusted = [keys] if isinstance(keys, VerifierKey) else list(keys)
    if origin is None:
        names = {key.name for key in trusted}
        if len(names) != 1:
            raise CheckpointError("give the expected origin when trusting keys of several names")
        origin = names.pop()
    checkpoint = Checkpoint.from_text(open_note(message, trusted).text)
    if checkpoint.origin != origin:
        raise CheckpointError(f"the checkpoint is for the log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


def verify_tree(checkpoint: Checkpoint, leaf_hashes: Iterable[bytes]) -> None:
    """Check that the checkpoint's root is the root of exactly these leaf hashes. Raises `ProofError`."""
    count = 0

    def counted() -> Iterator[bytes]:
        nonlocal count
        for h in leaf_hashes:
            count += 1
            yield h

    root = root_from_leaf_hashes(counted())
    if count != checkpoint.size:
        raise ProofError(f"the checkpoint is for {checkpoint.size} entries, but {count} were given")
    if root != checkpoint.root_hash:
        raise ProofError(f"the root of the {count} entries is not the checkpoint's root")


def verify_extends(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Check that the log at `new` extends the log at `old`: same log, old entries unchanged, only appended.

    Both checkpoints should come from `open_checkpoint`. A checkpoint of the empty log (size 0,
    root SHA-256 of nothing) is extended by every later one with an empty proof. Raises
    `VerificationError`.
    """
    if old.origin != new.origin:
        raise CheckpointError(f"the checkpoints are of different logs ({old.origin!r}, {new.origin!r})")
    if old.size == 0:
        if old.root_hash != EMPTY_ROOT:
            raise ProofError("the checkpoint of size 0 does not have the empty tree's root")
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)


def extends(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> bool:
    """Whether the log at `new` extends the log at `old` by this consistency proof (see `verify_extends`)."""
    try:
        verify_extends(old, new, proof)
    except VerificationError:
        return False
    return True


# -- Command line ----------------------------------------------------------------------------------


class _InputError(Exception):
    """A file or argument could not be read (exit status 2, like a usage error)."""


def _read_bytes(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror}") from None


def _read_text(path: str) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise _InputError(f"{path} is not UTF-8 text") from None


def _key(args: argparse.Namespace) -> VerifierKey:
    vkey = args.key if args.key is not None else _read_text(args.key_file).strip()
    return VerifierKey.parse(vkey)


def _b64_lines(path: str, what: str) -> Iterator[bytes]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield b64decode_strict(line.strip(), what)
        except VerificationError:
            raise _InputError(f"{path}:{number}: not a base64 {what}") from None


def _proof_json(path: str, fields: Sequence[str]) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise _InputError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or any(name not in data for name in fields):
        raise _InputError(f"{path}: a proof is a JSON object with {', '.join(fields)}")
    hashes = data["hashes"]
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise _InputError(f"{path}: 'hashes' is a list of base64 strings")
    for name in fields:
        if name in ("hashes", "leaf_hash"):
            continue
        if isinstance(data[name], bool) or not isinstance(data[name], int):
            raise _InputError(f"{path}: '{name}' is an integer")
    return data


def _hashes(values: Sequence[str]) -> list[bytes]:
    try:
        return [b64decode_strict(h, "proof hash") for h in values]
    except VerificationError as exc:
        raise ProofError(str(exc)) from None


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _describe(checkpoint: Checkpoint) -> str:
    return f"{checkpoint.origin} size {checkpoint.size} root {_b64(checkpoint.root_hash)}"


def _cmd_checkpoint(args: argparse.Namespace) -> str:
    checkpoint = open_checkpoint(_read_bytes(args.checkpoint), _key(args), args.origin)
    return f"checkpoint verified: {_describe(checkpoint)}"


def _cmd_tree(args: argparse.Namespace) -> str:
    checkpoint = open_checkpoint(_read_bytes(args.checkpoint), _key(args), args.origin)
    if args.entries is not None:
        leaves: Iterable[bytes] = (leaf_hash(entry) for entry in _b64_lines(args.entries, "entry"))
    else:
        leaves = _b64_lines(args.leaf_hashes, "leaf hash")
    verify_tree(checkpoint, leaves)
    return f"all {checkpoint.size} entries give the checkpoint's root: {_describe(checkpoint)}"


def _cmd_inclusion(args: argparse.Namespace) -> str:
    checkpoint = open_checkpoint(_read_bytes(args.checkpoint), _key(args), args.origin)
    data = _proof_json(args.proof, ("index", "size", "leaf_hash", "hashes"))
    index, size = data["index"], data["size"]
    if size != checkpoint.size:
        raise ProofError(f"the proof is for a tree of size {size}, the checkpoint's is {checkpoint.size}")
    if not isinstance(data["leaf_hash"], str):
        raise _InputError(f"{args.proof}: 'leaf_hash' is a base64 string")
    claimed = b64decode_strict(data["leaf_hash"], "leaf hash")
    if args.entry_file is not None:
        expected = leaf_hash(_read_bytes(args.entry_file))
    elif args.leaf_hash is not None:
        expected = b64decode_strict(args.leaf_hash, "leaf hash")
    else:
        expected = claimed
    if claimed != expected:
        raise ProofError("the proof is for another entry than the one given")
    if args.index is not None and args.index != index:
        raise ProofError(f"the proof is for entry {index}, not entry {args.index}")
    verify_inclusion(index, size, expected, _hashes(data["hashes"]), checkpoint.root_hash)
    return f"entry {index} (leaf hash {_b64(expected)}) is in the log at {_describe(checkpoint)}"


def _cmd_consistency(args: argparse.Namespace) -> str:
    key = _key(args)
    old = open_checkpoint(_read_bytes(args.old), key, args.origin)
    new = open_checkpoint(_read_bytes(args.new), key, args.origin)
    data = _proof_json(args.proof, ("first", "second", "hashes"))
    if (data["first"], data["second"]) != (old.size, new.size):
        raise ProofError(
            f"the proof is between sizes {data['first']} and {data['second']}, "
            f"the checkpoints' are {old.size} and {new.size}"
        )
    verify_extends(old, new, _hashes(data["hashes"]))
    return f"the log at {_describe(new)} extends the log at size {old.size} root {_b64(old.root_hash)}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verifier",
        description="Verify the referral service's audit log: signed checkpoints (C2SP tlog-checkpoint, "
        "Ed25519 signed notes), the root of all entries, and RFC 9162 inclusion and consistency proofs. "
        "Exit status 0 when everything checks out, 1 when something does not, 2 for unreadable input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        key = sub.add_mutually_exclusive_group(required=True)
        key.add_argument("--key", metavar="VKEY", help="the log's verifier key, NAME+KEYID+BASE64")
        key.add_argument("--key-file", metavar="FILE", help="a file holding the verifier key")
        sub.add_argument("--origin", help="the log's origin line (default: the verifier key's name)")
        return sub

    sub = command("checkpoint", "verify a signed checkpoint and print its size and root")
    sub.add_argument("checkpoint", metavar="CHECKPOINT", help="signed checkpoint file ('-' for stdin)")
    sub.set_defaults(run=_cmd_checkpoint)

    sub = command("tree", "recompute the root from all entries and compare it with a signed checkpoint")
    sub.add_argument("--checkpoint", required=True, metavar="FILE", help="signed checkpoint file")
    leaves = sub.add_mutually_exclusive_group(required=True)
    leaves.add_argument("--leaf-hashes", metavar="FILE", help="base64 leaf hashes in log order, one per line")
    leaves.add_argument("--entries", metavar="FILE", help="base64 canonical entry bytes in log order, one per line")
    sub.set_defaults(run=_cmd_tree)

    sub = command("inclusion", "verify an inclusion proof (GET /api/v1/audit/proof/inclusion) against a checkpoint")
    sub.add_argument("--checkpoint", required=True, metavar="FILE", help="signed checkpoint file")
    sub.add_argument("--proof", required=True, metavar="FILE", help='JSON {"index", "size", "leaf_hash", "hashes"}')
    sub.add_argument("--index", type=int, help="the entry's index the proof must be for")
    entry = sub.add_mutually_exclusive_group()
    entry.add_argument("--leaf-hash", metavar="B64", help="the entry's leaf hash, if you hold it")
    entry.add_argument("--entry-file", metavar="FILE", help="the entry's canonical bytes, if you hold them")
    sub.set_defaults(run=_cmd_inclusion)

    sub = command("consistency", "prove that a newer checkpoint extends an older one (nothing rewritten or removed)")
    sub.add_argument("--old", required=True, metavar="FILE", help="the older signed checkpoint, kept by you")
    sub.add_argument("--new", required=True, metavar="FILE", help="the newer signed checkpoint")
    sub.add_argument("--proof", required=True, metavar="FILE", help='JSON {"first", "second", "hashes"}')
    sub.set_defaults(run=_cmd_consistency)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verifier's command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        print(args.run(args))
    except _InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
