"""REFERRAL_HOME is for the service's own user: the folder 0700, the keyring and the SQLite files 0600,
whatever umask the operator's shell has, and also for a folder an earlier version left world-readable."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service_process import Service, base_env, cli, request
from tests.factories import referral_body

pytestmark = pytest.mark.e2e


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The commands inherit the usual shell umask (022), which alone would give 0644 and 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _run_and_write(env: dict[str, str]) -> dict[str, int]:
    """Start `run`, write through it, and read the modes of the database's files while it runs."""
    token = json.loads(cli(env, "users", "create", "--role", "caseworker", "--name", "Saima").stdout)
    service = Service(env, "run", "--port", "0")
    try:
        port = service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
        status, _ = request("POST", f"http://127.0.0.1:{port}/api/v1/referrals", token["token"], referral_body())
        assert status == 201
        home = Path(env["REFERRAL_HOME"])
        return {p.name: _mode(p) for p in home.iterdir()}
    finally:
        assert service.terminate() == 0


def test_init_and_run_keep_every_file_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = base_env(home)
    cli(env, "init")
    assert _mode(home) == 0o700
    assert _mode(home / "keyring.json") == 0o600
    assert _mode(home / "referrals.sqlite3") == 0o600

    modes = _run_and_write(env)
    assert {"referrals.sqlite3", "referrals.sqlite3-wal", "referrals.sqlite3-shm", "keyring.json"} <= set(modes)
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert _mode(home) == 0o700


def test_a_world_readable_home_from_an_earlier_version_is_closed_on_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = base_env(home)
    cli(env, "init")
    for path, mode in ((home, 0o755), (home / "keyring.json", 0o644), (home / "referrals.sqlite3", 0o644)):
        path.chmod(mode)

    cli(env, "init")
    assert _mode(home) == 0o700
    assert _mode(home / "keyring.json") == 0o600
    assert _mode(home / "referrals.sqlite3") == 0o600


def test_keys_init_makes_a_private_keyring_in_a_new_folder(tmp_path: Path) -> None:
    keyring = tmp_path / "secrets" / "keyring.json"
    env = base_env(tmp_path / "home", REFERRAL_KEYRING=str(keyring))
    cli(env, "keys", "init")
    assert _mode(keyring.parent) == 0o700
    assert _mode(keyring) == 0o600
