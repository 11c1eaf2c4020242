"""The Dockerfile and compose file cannot run here (no Docker engine); check them by reading."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from referral_service.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _command_exists(argv: list[str]) -> bool:
    """True when `referral-service ARGV...` names a real CLI command with valid options."""
    ctx = click.Context(main)
    try:
        cmd: click.Command = main
        args = list(argv)
        while isinstance(cmd, click.Group) and args:
            sub = cmd.get_command(ctx, args[0])
            if sub is None:
                return False
            cmd, args = sub, args[1:]
        cmd.make_context("referral-service", args, resilient_parsing=False)
        return True
    except click.UsageError:
        return False


def test_compose_defines_the_production_profile_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    expected = {"postgres", "rabbitmq", "api", "relay", "router", "deadlines", "integrator", "notify", "migrate"}
    assert expected <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    for name in ("api", "relay", "router", "deadlines", "integrator", "notify", "migrate"):
        service = services[name]
        assert service["build"] == "."
        assert _command_exists(service["command"]), (name, service["command"])
        env = service["environment"]
        assert env["REFERRAL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["REFERRAL_BROKER_URL"].startswith("amqp://")
        assert env["REFERRAL_KEYRING"].startswith("/run/secrets/")
    assert services["api"]["command"][0] == "serve"
    assert set(compose["secrets"]) == {"referral_keyring"}


def test_a_made_up_command_is_caught_by_the_check() -> None:
    assert not _command_exists(["frobnicate"])
    assert not _command_exists(["worker", "nonsense"])
    assert _command_exists(["worker", "router"])


def test_dockerfile_runs_serve_as_a_non_root_user_from_a_slim_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    entry = shlex.split(re.search(r"^ENTRYPOINT \[(.*)\]", text, re.M).group(1).replace(",", " "))
    cmd = shlex.split(re.search(r"^CMD \[(.*)\]", text, re.M).group(1).replace(",", " "))
    assert entry == ["referral-service"]
    assert _command_exists(cmd) and cmd[0] == "serve"
    for folder in ("referral_service", "workers", "schemas", "migrations"):
        assert re.search(rf"^COPY {folder} ", text, re.M), folder


def test_the_dockerfile_compiles_the_urdu_catalogue_with_a_command_that_works(tmp_path: Path) -> None:
    import shutil
    import sys

    from babel.messages.frontend import CommandLineInterface

    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"pybabel ((?:-\S+ )*compile(?: -\S+)*) -d referral_service/translations", text)
    assert match, "the Dockerfile must compile the translations"
    shutil.copytree(ROOT / "referral_service" / "translations", tmp_path / "translations")
    for mo in (tmp_path / "translations").rglob("*.mo"):
        mo.unlink()
    assert Path(sys.executable).with_name("pybabel").exists()
    # The command's own entry point, in-process (the unit tier starts no process): the same arguments.
    assert not CommandLineInterface().run(["pybabel", *match.group(1).split(), "-d", str(tmp_path / "translations")])
    assert list((tmp_path / "translations").rglob("ur/LC_MESSAGES/messages.mo"))
