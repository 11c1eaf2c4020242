"""Shared fixtures: an embedded-profile service per test (SQLite migrated once, then copied)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from referral_service.bootstrap import Services, bootstrap, prepare_database
from referral_service.config import Settings
from referral_service.crypto.keyring import create_keyring
from referral_service.domain.model import Actor, Role
from referral_service.services import partners, users
from schemas import PartnerSchema
from tests.factories import partner

TESTS = Path(__file__).parent
# Each folder is a tier, and a tier is a marker: `pytest -m unit` runs the fast in-process tests alone.
TIERS = ("unit", "integration", "e2e")
UNIT_RULE = (
    "a unit test runs in-process: it must not {what} (no network, no subprocess, no PostgreSQL or "
    "RabbitMQ); put this test in tests/e2e or tests/integration"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:  # a test file outside tests/ (passed by path)
            continue
        if folder in TIERS:
            item.add_marker(folder)


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the unit tier only: connecting or binding a socket, starting a process, or a PostgreSQL
    connection (libpq connects in C, past the socket module) raises at once, naming the rule."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(what: str) -> Any:
        def refused(*_: Any, **__: Any) -> Any:
            raise RuntimeError(UNIT_RULE.format(what=what))

        return refused

    def refuse_socket(what: str) -> Any:
        def refused(sock: socket.socket, *_: Any, **__: Any) -> Any:
            sock.close()  # the caller's error path may not close it (it expects OSError)
            raise RuntimeError(UNIT_RULE.format(what=what))

        return refused

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse_socket("connect a socket"))
    monkeypatch.setattr(socket.socket, "bind", refuse_socket("bind a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("start a subprocess"))
    monkeypatch.setattr(os, "system", refuse("start a subprocess"))
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the test extras install it
        return
    monkeypatch.setattr(psycopg.Connection, "connect", refuse("connect to PostgreSQL"))
    monkeypatch.setattr(psycopg, "connect", refuse("connect to PostgreSQL"))  # an alias bound at import


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


def embedded_settings(home: Path, **overrides: Any) -> Settings:
    env = {"REFERRAL_HOME": str(home)}
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite database migrated to head and its keyring; each test gets a copy."""
    home = tmp_path_factory.mktemp("template")
    settings = embedded_settings(home)
    create_keyring(settings.keyring_path)
    services = bootstrap(settings)
    prepare_database(services)
    services.dispose()
    return home


@pytest.fixture
def home(tmp_path: Path, migrated_template: Path) -> Path:
    target = tmp_path / "instance"
    shutil.copytree(migrated_template, target)
    return target


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def services(home: Path, clock: FakeClock) -> Iterator[Services]:
    svc = bootstrap(embedded_settings(home), clock=clock)
    yield svc
    svc.dispose()


@dataclass
class UserHandle:
    actor: Actor
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(services: Services) -> Any:
    counter = iter(range(1, 10_000))

    def _make(role: str, partner_id: str | None = None, password: str | None = None) -> UserHandle:
        created = users.create_user(
            services, name=f"{role}-{next(counter)}", role=role, partner_id=partner_id, password=password
        )
        return UserHandle(Actor(created["id"], Role(role), partner_id, created["name"]), created["token"])

    return _make


@pytest.fixture
def add_partner(services: Services) -> Any:
    def _add(**overrides: Any) -> dict[str, Any]:
        return partners.upsert_partners(services, [PartnerSchema().load(partner(**overrides))])[0]

    return _add


@pytest.fixture
def app(services: Services) -> Any:
    from referral_service.app import create_app

    return create_app(services, {"TESTING": True, "WTF_CSRF_ENABLED": True})


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()
