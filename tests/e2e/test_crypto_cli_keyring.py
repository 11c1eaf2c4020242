"""Start-up with a bad keyring: one line `error: REFERRAL_KEYRING: ...`, non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from referral_service.crypto.keyring import create_keyring

CLI = [sys.executable, "-m", "referral_service"]


def _run(home: Path, *args: str, keyring: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_HOME"] = str(home)
    if keyring is not None:
        env["REFERRAL_KEYRING"] = str(keyring)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _assert_one_keyring_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: REFERRAL_KEYRING: ")
    for part in expected:
        assert part in lines[0]


@pytest.fixture
def initialised(tmp_path: Path, migrated_template: Path) -> Path:
    """A migrated database that remembers (by fingerprint) the keyring it was created with."""
    home = tmp_path / "home"
    shutil.copytree(migrated_template, home)
    return home


@pytest.mark.parametrize(
    "command",
    [
        ("run", "--port", "0"),
        ("worker", "all"),
        ("keys", "rotate"),
        ("users", "create", "--role", "admin", "--name", "x"),
    ],
)
def test_missing_keyring_stops_every_command_with_one_line(initialised: Path, command: tuple[str, ...]) -> None:
    (initialised / "keyring.json").unlink()
    _assert_one_keyring_line(_run(initialised, *command), "no keyring at", "keys init")


def test_malformed_keyring_stops_start_up(initialised: Path) -> None:
    (initialised / "keyring.json").write_text('{"format": "referral-service-keyring", "version": 1, "active": [')
    _assert_one_keyring_line(_run(initialised, "run", "--port", "0"), "not a readable JSON keyring")


def test_short_key_stops_start_up_without_echoing_it(initialised: Path) -> None:
    path = initialised / "keyring.json"
    data = json.loads(path.read_text())
    data["keks"][data["active"]]["key"] = "c2hvcnQga2V5"  # "short key"
    path.write_text(json.dumps(data))
    result = _run(initialised, "run", "--port", "0")
    _assert_one_keyring_line(result, "must be 32 bytes, found 9")
    assert "c2hvcnQga2V5" not in result.stderr


def test_unhashable_active_entry_is_one_line_not_a_type_error(initialised: Path) -> None:
    path = initialised / "keyring.json"
    data = json.loads(path.read_text())
    data["active"] = ["kek"]
    path.write_text(json.dumps(data))
    _assert_one_keyring_line(_run(initialised, "worker", "all"), "no active key-encryption key")


def test_another_keyring_against_an_existing_database_stops_start_up(initialised: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-keyring.json"
    create_keyring(other)
    _assert_one_keyring_line(
        _run(initialised, "run", "--port", "0", keyring=other), "not the one this database was created with"
    )


def test_keys_init_refuses_to_overwrite_and_creates_a_fresh_one(initialised: Path, tmp_path: Path) -> None:
    before = (initialised / "keyring.json").read_bytes()
    _assert_one_keyring_line(_run(initialised, "keys", "init"), "refusing to overwrite")
    assert (initialised / "keyring.json").read_bytes() == before
    fresh = tmp_path / "fresh" / "keyring.json"
    created = _run(initialised, "keys", "init", keyring=fresh)
    assert created.returncode == 0 and fresh.exists()
    assert "created keyring" in created.stdout
