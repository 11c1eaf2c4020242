"""Fixtures for the real PostgreSQL and RabbitMQ on 127.0.0.1.

* `pg_database` (session): a scratch database `referral_it_<random>`, migrated once with Alembic,
  and a production-style keyring; dropped at the end.
* `amqp_url` (session): a scratch RabbitMQ virtual host, deleted at the end.
* `pg_services` (test): `Services` on them; every table is emptied after the test (TRUNCATE,
  because workers in other threads and processes use their own connections).
* `pg_savepoint_services` (test): for single-connection tests: everything runs inside one outer
  transaction, each commit only releases a savepoint, and the test's writes are rolled back.
* `broker` (test): a connection to the vhost; the router and dead-letter queues are purged before
  the test, and the partner queues the test read are deleted after it.
* `runtime` (test): the real relay and router as threads (`workers.runtime.Runtime`).
* `worker_env` (test): the environment for `referral-service worker ...` subprocesses.

Unreachable servers: the tests fail when CI is set, and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy.orm import sessionmaker

from referral_service.bootstrap import Services, bootstrap, prepare_database
from referral_service.config import Settings
from referral_service.crypto.keyring import create_keyring
from referral_service.db.session import make_engine
from referral_service.messaging.broker import connect
from referral_service.messaging.topology import dead_letter_queue
from tests.integration.harness import (
    PartnerQueues,
    WorkerProcess,
    World,
    create_vhost,
    delete_vhost,
    truncate_all,
)
from tests.servers import AMQP_URL, require_postgres, require_rabbitmq, scratch_database
from workers.handlers import declare_broker, group_queue
from workers.runtime import Runtime


@dataclass(frozen=True)
class PgDatabase:
    url: str
    keyring: Path
    home: Path


@pytest.fixture(scope="session")
def pg_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgDatabase]:
    require_postgres()
    home = tmp_path_factory.mktemp("pg-home")
    keyring = home / "keyring.json"
    create_keyring(keyring)
    with scratch_database("referral_it") as url:
        settings = Settings.from_env(
            {"REFERRAL_HOME": str(home), "REFERRAL_DATABASE_URL": url, "REFERRAL_KEYRING": str(keyring)}
        )
        services = bootstrap(settings)
        prepare_database(services)
        services.dispose()
        yield PgDatabase(url, keyring, home)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    require_rabbitmq()
    vhost = f"referral_it_{uuid.uuid4().hex[:10]}"
    url = create_vhost(AMQP_URL, vhost)
    yield url
    if url != AMQP_URL:
        delete_vhost(vhost)


def _settings(db: PgDatabase, broker_url: str) -> Settings:
    return Settings.from_env(_env(db, broker_url))


def _env(db: PgDatabase, broker_url: str) -> dict[str, str]:
    return {
        "REFERRAL_HOME": str(db.home),
        "REFERRAL_DATABASE_URL": db.url,
        "REFERRAL_BROKER_URL": broker_url,
        "REFERRAL_KEYRING": str(db.keyring),
    }


@pytest.fixture
def pg_services(pg_database: PgDatabase, amqp_url: str) -> Iterator[Services]:
    services = bootstrap(_settings(pg_database, amqp_url))
    try:
        yield services
    finally:
        truncate_all(services.engine)
        services.dispose()


@pytest.fixture
def pg_savepoint_services(pg_database: PgDatabase, amqp_url: str) -> Iterator[Services]:
    engine = make_engine(pg_database.url)
    connection = engine.connect()
    outer = connection.begin()
    services = bootstrap(_settings(pg_database, amqp_url), engine=engine)
    services.session_factory = sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    try:
        yield services
    finally:
        outer.rollback()
        connection.close()
        engine.dispose()


@pytest.fixture
def world(pg_services: Services) -> World:
    return World(pg_services)


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Connection]:
    conn = connect(amqp_url)
    conn.ensure_connection(max_retries=3)
    declare_broker(conn)
    channel = conn.default_channel
    group_queue(conn, "router")(channel).purge()
    dead_letter_queue(conn)(channel).purge()
    try:
        yield conn
    finally:
        conn.release()


@pytest.fixture
def partner_queues(broker: Connection) -> Iterator[PartnerQueues]:
    reader = PartnerQueues(broker)
    yield reader
    # A test that restarted the broker leaves this connection dead; the vhost goes at the end anyway.
    with contextlib.suppress(Exception):
        reader.delete(list(reader.seen))


@pytest.fixture
def runtime(pg_services: Services, broker: Connection) -> Iterator[Runtime]:
    """The real relay and router, in threads of this process."""
    rt = Runtime(pg_services)
    rt.start(("relay", "router"))
    yield rt
    rt.shutdown()


@pytest.fixture
def worker_env(pg_database: PgDatabase, amqp_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env.update(_env(pg_database, amqp_url), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], pg_services: Services, broker: Connection
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `referral-service worker NAME` subprocesses; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def _start(name: str, **extra_env: Any) -> WorkerProcess:
        proc = WorkerProcess({**worker_env, **{k: str(v) for k, v in extra_env.items()}}, name)
        started.append(proc)
        return proc.wait_running()

    yield _start
    for proc in started:
        proc.stop()
