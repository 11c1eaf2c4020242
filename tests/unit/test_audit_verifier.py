"""The auditors' standalone verifier: what it imports, and its command line end to end on files."""

from __future__ import annotations

import ast
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from referral_service.audit import merkle, note, verifier
from referral_service.audit.merkle import MerkleTree, leaf_hash
from referral_service.audit.note import Checkpoint, Signer, sign_checkpoint

AUDIT = Path(verifier.__file__).resolve().parent


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every (module, relative level) the file imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_the_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    imports = imported_modules(AUDIT / "verifier.py")
    assert imports
    outside = [
        (name, level)
        for name, level in imports
        if level or (name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "cryptography")
    ]
    assert outside == []


@pytest.mark.parametrize("module", ["merkle.py", "note.py"])
def test_the_tree_and_the_signer_use_nothing_of_the_service_but_the_verifier(module: str) -> None:
    service = {name for name, _ in imported_modules(AUDIT / module) if name.startswith("referral_service")}
    assert service <= {"referral_service.audit.verifier"}
    # Proof generation adds no hashing of its own: the verifier's functions are the tree's.
    assert merkle.leaf_hash is verifier.leaf_hash and merkle.verify_inclusion is verifier.verify_inclusion
    assert note.open_note is verifier.open_note


@dataclass
class Log:
    dir: Path
    key: str
    signer: Signer


@pytest.fixture
def log(tmp_path: Path) -> Log:
    """A log of 25 entries with checkpoints at sizes 17 and 25, exported as an auditor would keep them."""
    signer = Signer.generate("audit.example/log")
    entries = [b"entry %d: canonical bytes" % i for i in range(25)]
    tree = MerkleTree()
    tree.append(leaf_hash(e) for e in entries[:17])
    (tmp_path / "old.checkpoint").write_text(sign_checkpoint(Checkpoint(signer.name, 17, tree.root()), signer))
    tree.append(leaf_hash(e) for e in entries[17:])
    (tmp_path / "new.checkpoint").write_text(sign_checkpoint(Checkpoint(signer.name, 25, tree.root()), signer))
    (tmp_path / "entries.txt").write_text("".join(base64.b64encode(e).decode() + "\n" for e in entries))
    (tmp_path / "leaves.txt").write_text("".join(base64.b64encode(leaf_hash(e)).decode() + "\n" for e in entries))
    (tmp_path / "entry9.bin").write_bytes(entries[9])
    # The API's shapes: GET /api/v1/audit/proof/inclusion and /consistency.
    (tmp_path / "inclusion.json").write_text(
        json.dumps(
            {
                "index": 9,
                "size": 25,
                "leaf_hash": base64.b64encode(leaf_hash(entries[9])).decode(),
                "hashes": [base64.b64encode(h).decode() for h in tree.inclusion_proof(9, 25)],
            }
        )
    )
    (tmp_path / "consistency.json").write_text(
        json.dumps(
            {
                "first": 17,
                "second": 25,
                "hashes": [base64.b64encode(h).decode() for h in tree.consistency_proof(17, 25)],
            }
        )
    )
    (tmp_path / "key.txt").write_text(str(signer.verifier_key) + "\n")
    return Log(tmp_path, str(signer.verifier_key), signer)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = verifier.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_command_line_verifies_a_checkpoint_all_entries_and_both_proofs(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    d, key = log.dir, log.key
    status, out, _ = run(capsys, "checkpoint", "--key", key, d / "new.checkpoint")
    assert status == 0 and "size 25" in out
    assert run(capsys, "checkpoint", "--key-file", d / "key.txt", d / "old.checkpoint")[0] == 0
    entries = run(capsys, "tree", "--key", key, "--checkpoint", d / "new.checkpoint", "--entries", d / "entries.txt")
    assert entries[0] == 0
    status, out, _ = run(
        capsys, "tree", "--key", key, "--checkpoint", d / "new.checkpoint", "--leaf-hashes", d / "leaves.txt"
    )
    assert status == 0 and "all 25 entries" in out
    status, out, _ = run(
        capsys,
        "inclusion",
        "--key",
        key,
        "--checkpoint",
        d / "new.checkpoint",
        "--proof",
        d / "inclusion.json",
        "--index",
        "9",
        "--entry-file",
        d / "entry9.bin",
    )
    assert status == 0 and "entry 9" in out
    status, out, _ = run(
        capsys,
        "consistency",
        "--key",
        key,
        "--old",
        d / "old.checkpoint",
        "--new",
        d / "new.checkpoint",
        "--proof",
        d / "consistency.json",
    )
    assert status == 0 and "extends" in out


def test_the_command_line_fails_on_a_changed_entry_a_wrong_proof_or_a_rewritten_log(
    log: Log, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d, key = log.dir, log.key
    entries = (d / "entries.txt").read_text().splitlines()
    entries[4] = base64.b64encode(b"entry 4: edited").decode()
    (tmp_path / "edited.txt").write_text("\n".join(entries) + "\n")
    status, _, err = run(
        capsys, "tree", "--key", key, "--checkpoint", d / "new.checkpoint", "--entries", tmp_path / "edited.txt"
    )
    assert status == 1 and "FAILED" in err
    (tmp_path / "short.txt").write_text("\n".join(entries[:24]) + "\n")
    status, _, err = run(
        capsys, "tree", "--key", key, "--checkpoint", d / "new.checkpoint", "--entries", tmp_path / "short.txt"
    )
    assert status == 1 and "25 entries" in err

    (tmp_path / "entry10.bin").write_bytes(b"entry 10: canonical bytes")
    status, _, err = run(
        capsys,
        "inclusion",
        "--key",
        key,
        "--checkpoint",
        d / "new.checkpoint",
        "--proof",
        d / "inclusion.json",
        "--entry-file",
        tmp_path / "entry10.bin",
    )
    assert status == 1 and "another entry" in err
    proof = json.loads((d / "inclusion.json").read_text())
    proof["index"] = 10
    (tmp_path / "moved.json").write_text(json.dumps(proof))
    assert (
        run(
            capsys, "inclusion", "--key", key, "--checkpoint", d / "new.checkpoint", "--proof", tmp_path / "moved.json"
        )[0]
        == 1
    )

    # A log rewritten from entry 3 on and re-signed with the log's own key does not extend the old checkpoint.
    signer, tree = log.signer, MerkleTree()
    tree.append(
        leaf_hash(b"forged %d" % i) if i >= 3 else leaf_hash(b"entry %d: canonical bytes" % i) for i in range(25)
    )
    (tmp_path / "forged.checkpoint").write_text(sign_checkpoint(Checkpoint(signer.name, 25, tree.root()), signer))
    (tmp_path / "forged.json").write_text(
        json.dumps(
            {
                "first": 17,
                "second": 25,
                "hashes": [base64.b64encode(h).decode() for h in tree.consistency_proof(17, 25)],
            }
        )
    )
    status, _, err = run(
        capsys,
        "consistency",
        "--key",
        key,
        "--old",
        d / "old.checkpoint",
        "--new",
        tmp_path / "forged.checkpoint",
        "--proof",
        tmp_path / "forged.json",
    )
    assert status == 1 and "consistency proof" in err
    # The same, re-signed with another key: the signature already fails.
    other = Signer.generate(signer.name)
    (tmp_path / "other.checkpoint").write_text(sign_checkpoint(Checkpoint(other.name, 25, tree.root()), other))
    status, _, err = run(
        capsys,
        "consistency",
        "--key",
        key,
        "--old",
        d / "old.checkpoint",
        "--new",
        tmp_path / "other.checkpoint",
        "--proof",
        tmp_path / "forged.json",
    )
    assert status == 1 and "trusted key" in err


def test_the_command_line_reports_unreadable_input_with_status_2(
    log: Log, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d, key = log.dir, log.key
    status, _, err = run(capsys, "checkpoint", "--key", key, tmp_path / "missing")
    assert status == 2 and "cannot read" in err
    (tmp_path / "bad.json").write_text("{not json")
    assert (
        run(capsys, "inclusion", "--key", key, "--checkpoint", d / "new.checkpoint", "--proof", tmp_path / "bad.json")[
            0
        ]
        == 2
    )
    with pytest.raises(SystemExit) as usage:
        verifier.main(["inclusion", "--key", key])
    assert usage.value.code == 2
