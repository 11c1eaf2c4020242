"""C2SP signed notes and tlog-checkpoints: the specification's example, Go's test keys, malformed notes."""

from __future__ import annotations

import base64
import hashlib

import pytest

from referral_service.audit.merkle import EMPTY_ROOT, MerkleTree, leaf_hash
from referral_service.audit.note import (
    Checkpoint,
    CheckpointError,
    NoteError,
    NoteSignature,
    Signer,
    VerifierKey,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)
from referral_service.audit.verifier import MAX_SIGNATURES, MAX_TREE_SIZE, ProofError, extends, verify_extends

# c2sp.org/signed-note, "Example" (also in ../shared/testdata/merkle/README.md).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_TEXT = "This is an example message.\n"
SPEC_SIGNATURE = (
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
SPEC_NOTE = SPEC_TEXT + "\n" + SPEC_SIGNATURE

# golang.org/x/mod/sumdb/note's published test keys and its TestSign output (Ed25519 is deterministic).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_ENOCH_SIGNATURE = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)


@pytest.fixture
def spec_key() -> VerifierKey:
    return VerifierKey.parse(SPEC_VKEY)


# -- the specification's example ---------------------------------------------------------------------


def test_the_specification_example_note_verifies(spec_key: VerifierKey) -> None:
    note = open_note(SPEC_NOTE, spec_key)
    assert note.text == SPEC_TEXT
    assert [(s.name, s.key_id) for s in note.verified] == [("example.com/foo", 0x530D903A)]
    assert note.unknown == ()
    assert open_note(SPEC_NOTE.encode("utf-8"), [spec_key]).text == SPEC_TEXT


def test_the_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key(spec_key: VerifierKey) -> None:
    raw = base64.b64decode(SPEC_VKEY.split("+")[2])
    assert raw[0] == 0x01 and len(raw) == 33
    expected = hashlib.sha256(b"example.com/foo" + b"\x0a" + b"\x01" + raw[1:]).digest()[:4]
    assert expected.hex() == "530d903a"
    assert key_id("example.com/foo", 0x01, raw[1:]) == int.from_bytes(expected, "big") == spec_key.key_id
    assert str(spec_key) == SPEC_VKEY
    # The signature line's base64 begins with the same four bytes.
    assert base64.b64decode(SPEC_SIGNATURE.split()[-1])[:4] == expected


def test_every_single_byte_corruption_of_the_example_note_is_rejected(spec_key: VerifierKey) -> None:
    original = SPEC_NOTE.encode("utf-8")
    accepted = []
    for position in range(len(original)):
        for value in range(256):
            if value == original[position]:
                continue
            corrupted = original[:position] + bytes([value]) + original[position + 1 :]
            try:
                open_note(corrupted, spec_key)
            except NoteError:
                continue
            accepted.append((position, value))
    assert accepted == []


def test_every_deleted_or_inserted_byte_of_the_example_note_is_rejected(spec_key: VerifierKey) -> None:
    original = SPEC_NOTE.encode("utf-8")
    variants = [original[:i] + original[i + 1 :] for i in range(len(original))]
    variants += [original[:i] + b"A" + original[i:] for i in range(len(original) + 1)]
    variants += [original[:i] + b"\n" + original[i:] for i in range(len(original) + 1)]
    accepted = []
    for variant in variants:
        try:
            open_note(variant, spec_key)
        except NoteError:
            continue
        accepted.append(variant)
    assert accepted == []


# -- interoperability with golang.org/x/mod/sumdb/note ---------------------------------------------------


def test_signing_with_gos_test_key_gives_gos_signed_note_byte_for_byte() -> None:
    signer = Signer.from_string(GO_SKEY)
    assert str(signer.verifier_key) == GO_VKEY
    assert signer.to_string() == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_TEXT + "\n" + GO_SIGNATURE
    assert open_note(GO_TEXT + "\n" + GO_SIGNATURE, VerifierKey.parse(GO_VKEY)).text == GO_TEXT


def test_signatures_by_unknown_keys_are_ignored_and_reported() -> None:
    peter = VerifierKey.parse(GO_VKEY)
    note = open_note(GO_TEXT + "\n" + GO_SIGNATURE + GO_ENOCH_SIGNATURE, peter)
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert [(s.name, s.key_id) for s in note.unknown] == [("EnochRoot", 0xAF0CFE78)]
    both = open_note(GO_TEXT + "\n" + GO_ENOCH_SIGNATURE + GO_SIGNATURE, [peter, VerifierKey.parse(GO_ENOCH_VKEY)])
    assert [s.name for s in both.verified] == ["EnochRoot", "PeterNeumann"]


def test_a_note_signed_only_by_unknown_keys_is_rejected(spec_key: VerifierKey) -> None:
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(GO_TEXT + "\n" + GO_SIGNATURE + GO_ENOCH_SIGNATURE, spec_key)
    with pytest.raises(NoteError):
        open_note(SPEC_NOTE, [])


def test_a_signature_sharing_only_the_name_or_only_the_key_id_of_a_trusted_key_is_ignored() -> None:
    real = Signer.generate("example.org/log")
    impostor = Signer.generate("example.org/log")  # same name, other key: another key ID
    assert impostor.key_id != real.key_id
    text = "hello\n"
    note = open_note(sign_note(text, [impostor, real]), real.verifier_key)
    assert [s.key_id for s in note.verified] == [real.key_id]
    assert [s.key_id for s in note.unknown] == [impostor.key_id]
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(sign_note(text, impostor), real.verifier_key)


def test_a_bad_signature_by_a_trusted_key_rejects_the_whole_note() -> None:
    first, second = Signer.generate("a.example/log"), Signer.generate("b.example/log")
    good = sign_note("text\n", [first, second])
    forged = NoteSignature(second.name, second.key_id, bytes(64)).line()
    tampered = good.replace(good.splitlines(keepends=True)[-1], forged)
    assert open_note(tampered, first.verifier_key).text == "text\n"  # the bad one is not a trusted key here
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [first.verifier_key, second.verifier_key])


def test_at_least_sixteen_signatures_are_accepted_and_too_many_refused() -> None:
    signers = [Signer.generate(f"witness{i}.example") for i in range(16)]
    note = open_note(sign_note("cosigned\n", signers), [s.verifier_key for s in signers])
    assert len(note.verified) == 16
    one = Signer.generate("one.example")
    line = one.sign("x\n").line()
    with pytest.raises(NoteError, match="at most"):
        parse_note("x\n\n" + line * (MAX_SIGNATURES + 1))
    assert len(open_note("x\n\n" + line * MAX_SIGNATURES, one.verifier_key).verified) == MAX_SIGNATURES


# -- malformed notes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (SPEC_NOTE.replace("\n", "\r\n"), "CRLF line endings"),
        (SPEC_TEXT + "\r\n" + SPEC_SIGNATURE, "CR in the blank line"),
        (SPEC_TEXT + SPEC_SIGNATURE, "no blank line before the signatures"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.rstrip("\n"), "no newline after the last signature"),
        (SPEC_TEXT + "\n", "no signature lines"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE + "\n", "a blank line after the signatures"),
        (SPEC_TEXT.rstrip("\n") + "\n" + SPEC_SIGNATURE, "text not ending in a newline"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("\u2014", "-"), "hyphen instead of em dash"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("\u2014", "\u2013"), "en dash instead of em dash"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("\u2014 ", "\u2014"), "no space after the em dash"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("foo ", "foo  "), "two spaces before the signature"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("foo ", "foo\t"), "tab before the signature"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("=\n", "\n"), "signature without its base64 padding"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("M=\n", "N=\n"), "non-canonical base64 (padding bits set)"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE + "\u2014 example.com/foo AAAA\n", "signature shorter than 5 bytes"),
        (SPEC_TEXT + "\n" + SPEC_SIGNATURE.replace("example.com/foo", "example.com/f+o"), "plus in the key name"),
        ("This is an\texample message.\n\n" + SPEC_SIGNATURE, "tab in the text"),
        (SPEC_NOTE.encode("utf-8").replace(b"example message", b"example \xffmessage"), "not UTF-8"),
        (SPEC_NOTE.encode("utf-8").replace(b"\xe2\x80\x94", b"\xe2\x80"), "truncated em dash"),
        ("This is an example message.\ud800\n\n" + SPEC_SIGNATURE, "lone surrogate"),
        ("", "empty"),
    ],
)
def test_malformed_notes_are_rejected(spec_key: VerifierKey, message: str | bytes, why: str) -> None:
    with pytest.raises(NoteError):
        open_note(message, spec_key)


def test_the_text_is_separated_at_the_last_blank_line() -> None:
    signer = Signer.generate("log.example")
    text = "first paragraph\n\n\u2014 not a signature\n"
    note = open_note(sign_note(text, signer), signer.verifier_key)
    assert note.text == text


@pytest.mark.parametrize(
    "vkey",
    [
        SPEC_VKEY.replace("530d903a", "530d903b"),  # wrong key ID
        SPEC_VKEY.replace("530d903a", "530D903A"),  # key IDs are lowercase hex
        SPEC_VKEY.replace("+530d903a+", "+530d903+"),
        SPEC_VKEY.replace("example.com/foo", "example.com/bar"),  # name does not give that key ID
        SPEC_VKEY.replace("+Aeky", "+Aiky"),  # signature type 0x02
        SPEC_VKEY + "AA",  # wrong length
        SPEC_VKEY[:-1] + "l",  # non-canonical base64 of the same bytes
        "example.com/foo+530d903a",
        "example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "",
    ],
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(NoteError):
        VerifierKey.parse(vkey)


def test_every_mangling_of_a_signer_key_string_is_rejected_without_quoting_it() -> None:
    assert Signer.from_string(GO_SKEY).name == "PeterNeumann"
    manglings = {GO_SKEY[i:j] for i in range(len(GO_SKEY) + 1) for j in range(i + 1, len(GO_SKEY) + 1)}
    manglings |= {GO_SKEY[:i] + chr(ord(GO_SKEY[i]) + 1) + GO_SKEY[i + 1 :] for i in range(len(GO_SKEY))}
    manglings.discard(GO_SKEY)
    accepted = []
    for mangled in manglings:
        try:
            Signer.from_string(mangled)
        except NoteError as exc:
            assert GO_SKEY.split("+")[-1][:8] not in str(exc)
            continue
        accepted.append(mangled)
    assert accepted == []


def test_a_signer_never_shows_its_private_key() -> None:
    signer = Signer.from_string(GO_SKEY)
    secret = GO_SKEY.split("+", 4)[4]
    assert secret not in repr(signer) and secret not in str(signer)
    assert "c74f20a3" in repr(signer)
    assert Signer.from_seed("PeterNeumann", signer.seed()).verifier_key == signer.verifier_key


def test_signing_refuses_text_that_cannot_be_a_note() -> None:
    signer = Signer.generate("log.example")
    for text in ("no newline", "", "crlf\r\n", "tab\there\n"):
        with pytest.raises(NoteError):
            sign_note(text, signer)
    with pytest.raises(NoteError, match="once"):
        sign_note("twice\n", [signer, signer])
    with pytest.raises(NoteError):
        sign_note("nobody\n", [])
    with pytest.raises(NoteError):
        Signer.generate("bad name")


def test_kept_signatures_are_carried_over_and_a_signers_own_is_replaced() -> None:
    log, witness = Signer.generate("log.example"), Signer.generate("witness.example")
    first = parse_note(sign_note("head\n", [log, witness]))
    stale = NoteSignature(log.name, log.key_id, bytes(64))
    again = sign_note("head\n", log, keep=[first.signatures[1], stale])
    note = open_note(again, [log.verifier_key, witness.verifier_key])
    assert [s.name for s in note.verified] == ["witness.example", "log.example"]


# -- checkpoints -------------------------------------------------------------------------------------


def test_the_specification_example_checkpoint_body_parses_and_formats_back() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.from_text(body)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.text == body
    with_extensions = Checkpoint.from_text(body + "ext one\nanother\n")
    assert with_extensions.extensions == ("ext one", "another")
    assert with_extensions.text == body + "ext one\nanother\n"


ROOT64 = base64.b64encode(EMPTY_ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"log.example\n0\n{ROOT64}",  # no final newline
        "log.example\n0\n",
        f"\n0\n{ROOT64}\n",
        f"log.example\n007\n{ROOT64}\n",
        f"log.example\n+5\n{ROOT64}\n",
        f"log.example\n-1\n{ROOT64}\n",
        f"log.example\n 5\n{ROOT64}\n",
        f"log.example\n5 \n{ROOT64}\n",
        f"log.example\n\u0665\n{ROOT64}\n",  # an Arabic-Indic digit is not ASCII decimal
        f"log.example\n{MAX_TREE_SIZE + 1}\n{ROOT64}\n",
        "log.example\n0\nAAAA\n",
        f"log.example\n0\n{ROOT64.rstrip('=')}\n",
        f"log.example\n0\n{ROOT64}\n\n",  # empty extension line
        f"log.example\n0\n{ROOT64}\n\nsomething\n",
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.from_text(body)


@pytest.fixture
def log_key() -> Signer:
    return Signer.generate("audit.referral-service.example/log")


def checkpoint_of(tree: MerkleTree, signer: Signer, size: int | None = None) -> Checkpoint:
    size = tree.size if size is None else size
    return Checkpoint(signer.name, size, tree.root(size))


def test_a_signed_checkpoint_opens_with_the_logs_verifier_key_string(log_key: Signer) -> None:
    tree = MerkleTree()
    tree.append(leaf_hash(b"entry %d" % i) for i in range(10))
    signed = sign_checkpoint(checkpoint_of(tree, log_key), log_key)
    lines = signed.split("\n")
    assert lines[:4] == [log_key.name, "10", base64.b64encode(tree.root()).decode(), ""]
    assert lines[4].startswith("\u2014 " + log_key.name + " ")
    opened = open_checkpoint(signed, str(log_key.verifier_key))
    assert (opened.origin, opened.size, opened.root_hash) == (log_key.name, 10, tree.root())


def test_a_checkpoint_of_another_log_or_key_is_rejected(log_key: Signer) -> None:
    other = Signer.generate("other.example/log")
    body = Checkpoint(other.name, 0, EMPTY_ROOT)
    with pytest.raises(NoteError):
        open_checkpoint(sign_checkpoint(body, other), log_key.verifier_key)
    # Signed by the right key, but naming another log.
    with pytest.raises(CheckpointError):
        sign_checkpoint(body, log_key)
    mislabelled = sign_note(body.text, log_key)
    with pytest.raises(CheckpointError, match="other.example/log"):
        open_checkpoint(mislabelled, log_key.verifier_key)
    assert open_checkpoint(mislabelled, log_key.verifier_key, origin="other.example/log").size == 0
    # A signed note that is not a checkpoint.
    with pytest.raises(CheckpointError):
        open_checkpoint(sign_note("hello\n", log_key), log_key.verifier_key)


def test_a_checkpoint_rewritten_after_signing_is_rejected(log_key: Signer) -> None:
    tree = MerkleTree()
    tree.append([leaf_hash(b"a"), leaf_hash(b"b")])
    signed = sign_checkpoint(checkpoint_of(tree, log_key), log_key)
    bigger = signed.replace("\n2\n", "\n3\n")
    renamed = signed.replace(log_key.name + "\n", "x" + log_key.name + "\n", 1)
    for tampered in (bigger, renamed):
        with pytest.raises(NoteError):
            open_checkpoint(tampered, log_key.verifier_key)


def test_a_later_checkpoint_extends_an_earlier_one_only_with_a_valid_consistency_proof(log_key: Signer) -> None:
    tree = MerkleTree()
    tree.append(leaf_hash(b"entry %d" % i) for i in range(20))
    old = checkpoint_of(tree, log_key, 13)
    new = checkpoint_of(tree, log_key)
    proof = tree.consistency_proof(13, 20)
    assert extends(old, new, proof)
    verify_extends(old, new, proof)
    assert extends(new, new, [])
    assert not extends(new, old, proof)
    # A log rewritten before the old checkpoint: same sizes, other history.
    rewritten = MerkleTree()
    rewritten.append(leaf_hash(b"entry %d" % i) if i != 4 else leaf_hash(b"forged") for i in range(20))
    forged_new = checkpoint_of(rewritten, log_key)
    assert not extends(old, forged_new, rewritten.consistency_proof(13, 20))
    assert not extends(old, forged_new, proof)
    # Another log's checkpoint never extends this one's.
    assert not extends(old, Checkpoint("other.example/log", 20, new.root_hash), proof)
    with pytest.raises(CheckpointError):
        verify_extends(old, Checkpoint("other.example/log", 20, new.root_hash), proof)


def test_every_checkpoint_extends_the_empty_log(log_key: Signer) -> None:
    tree = MerkleTree()
    empty = checkpoint_of(tree, log_key)
    tree.append([leaf_hash(b"first")])
    assert extends(empty, checkpoint_of(tree, log_key), [])
    assert not extends(empty, checkpoint_of(tree, log_key), [EMPTY_ROOT])
    with pytest.raises(ProofError):
        verify_extends(Checkpoint(log_key.name, 0, leaf_hash(b"not empty")), checkpoint_of(tree, log_key), [])
