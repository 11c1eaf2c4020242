"""Helpers for the integration tests on the real PostgreSQL and RabbitMQ.

Each test session gets its own PostgreSQL database and its own RabbitMQ virtual host, so these
tests never see (or steal) the messages of another suite, or of a service, on the same servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Message
from sqlalchemy import Engine, text

from referral_service.bootstrap import Services
from referral_service.db.models import Base
from referral_service.domain.model import Actor, Role
from referral_service.messaging.topology import partner_queue
from referral_service.services import partners, users
from referral_service.services.referrals import submit_referral
from schemas import PartnerSchema, ReferralInputSchema
from tests.e2e.service_process import Service, wait_until
from tests.factories import partner, referral_body

# Kept across tests: the keyring fingerprint the database was created with.
KEEP_TABLES = {"crypto_meta"}


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        raise FileNotFoundError("rabbitmqctl")
    return subprocess.run([tool, "-q", *args], capture_output=True, text=True, timeout=timeout, check=True)


def create_vhost(base_url: str, name: str) -> str:
    """A fresh virtual host for guest; falls back to the URL's own vhost without rabbitmqctl."""
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (FileNotFoundError, subprocess.CalledProcessError):
        return base_url
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}/{name}"


def delete_vhost(name: str) -> None:
    for _ in range(3):  # rabbitmqctl now and then fails while the node is busy: try again
        with contextlib.suppress(FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
            rabbitmqctl("delete_vhost", name)
            return
        time.sleep(1)


def truncate_all(engine: Engine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables if t.name not in KEEP_TABLES]
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        # The audit log starts again as the migration made it: one head row of the empty tree.
        conn.execute(
            text("INSERT INTO audit_head (id, size, root, updated_at) VALUES (1, 0, :root, now())"),
            {"root": hashlib.sha256(b"").digest()},
        )


def unique_id(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class World:
    """Users and partners of one test, on one `Services`."""

    services: Services

    def caseworker(self) -> Actor:
        created = users.create_user(self.services, name=unique_id("cw"), role="caseworker")
        return Actor(created["id"], Role.CASEWORKER, None, created["name"])

    def partner_staff(self, partner_id: str) -> tuple[Actor, str]:
        created = users.create_user(self.services, name=unique_id("staff"), role="partner", partner_id=partner_id)
        return Actor(created["id"], Role.PARTNER, partner_id, created["name"]), created["token"]

    def add_partner(self, **overrides: Any) -> str:
        overrides.setdefault("id", unique_id())
        partners.upsert_partners(self.services, [PartnerSchema().load(partner(**overrides))])
        return str(overrides["id"])

    def submit(self, actor: Actor, **overrides: Any) -> str:
        cmd = ReferralInputSchema().load(referral_body(**overrides))
        outcome = submit_referral(self.services, cmd, actor)
        return str(outcome.body["id"])


def decode(message: Message) -> dict[str, Any]:
    raw = message.body.decode() if isinstance(message.body, bytes) else message.body
    return dict(json.loads(raw))


class PartnerQueues:
    """Reads partner queues the way a partner's own system would (basic.get, explicit ack)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.raw: list[str] = []

    def drain(self, partner_id: str) -> list[dict[str, Any]]:
        queue = partner_queue(self.connection, partner_id)(self.connection.default_channel)
        queue.declare()
        got = self.seen.setdefault(partner_id, [])
        while (message := queue.get(no_ack=False)) is not None:
            self.raw.append(message.body.decode() if isinstance(message.body, bytes) else str(message.body))
            got.append(decode(message))
            message.ack()
        return got

    def wait_for(
        self, partner_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20, count: int = 1
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            hits = [m for m in self.drain(partner_id) if predicate(m)]
            return hits if len(hits) >= count else None

        return list(wait_until(found, timeout, what=f"{count} message(s) in partner.{partner_id}.assignments"))

    def delete(self, partner_ids: Iterable[str]) -> None:
        for pid in partner_ids:
            partner_queue(self.connection, pid)(self.connection.default_channel).delete()


class WorkerProcess(Service):
    """`referral-service worker NAME` as its own process, as an operator runs it."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        super().__init__(env, "worker", name)
        self.name = name

    def wait_running(self, timeout: float = 30) -> WorkerProcess:
        self.wait_for(rf"worker {self.name} running", timeout)
        return self

    def kill(self) -> None:
        """kill -9: no clean-up, no acks, no commits after this instant."""
        self.terminate(signal.SIGKILL, timeout=10)

    def stop(self, timeout: float = 20) -> int:
        return self.terminate(signal.SIGTERM, timeout)
