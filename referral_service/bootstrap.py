"""The one wiring point shared by the Flask app, the CLI and every worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from referral_service.audit.log import AuditKeys, AuditLog
from referral_service.clock import Clock, SystemClock
from referral_service.config import ConfigError, Settings
from referral_service.crypto import BlindIndexer, FieldCipher, FileKeyring, KeyProvider
from referral_service.db.session import UnitOfWork, make_engine
from referral_service.domain.deadlines import DeadlinePolicy
from referral_service.files import PRIVATE_DIR, PRIVATE_FILE, restrict_to_owner
from referral_service.services.access import AccessRecorder, AuditRecorder
from referral_service.services.damage import DamageLog, DamageReporter
from referral_service.services.matching import DuplicateMatcher
from referral_service.services.vault import Vault

if TYPE_CHECKING:
    from referral_service.services.upgrades import UpgradeReport


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    keys: KeyProvider
    vault: Vault
    matcher: DuplicateMatcher
    access: AccessRecorder
    audit: AuditLog
    clock: Clock
    deadline_policy: DeadlinePolicy
    damage: DamageReporter
    # Set after each commit that wrote outbox rows, so an in-process relay publishes at once
    # instead of waiting for its next poll.
    outbox_signal: threading.Event = field(default_factory=threading.Event)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, on_commit=self.outbox_signal.set)

    def dispose(self) -> None:
        self.engine.dispose()


def bootstrap(
    settings: Settings,
    *,
    keys: KeyProvider | None = None,
    clock: Clock | None = None,
    access: AccessRecorder | None = None,
    damage: DamageReporter | None = None,
    engine: Engine | None = None,
    **engine_kwargs: Any,
) -> Services:
    """Build every adapter once. Raises ConfigError (one line) for anything an operator must fix."""
    try:
        policy = DeadlinePolicy.load(settings.deadline_policy_path)
    except ValueError as exc:
        raise ConfigError(f"REFERRAL_DEADLINE_POLICY: {exc}") from None
    if keys is None:
        keys = FileKeyring(settings.keyring_path)
    if engine is None:
        if settings.database_url.startswith("sqlite"):
            settings.home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            restrict_to_owner(settings.home, PRIVATE_DIR)
        engine = make_engine(settings.database_url, **engine_kwargs)
    restrict_to_owner(settings.keyring_path, PRIVATE_FILE)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    damage = damage or DamageLog()
    clock = clock or SystemClock()
    built: list[Services] = []
    audit = AuditLog(AuditKeys(keys, settings.audit_origin), clock.now)
    # Entries outside any unit of work get one of their own, from the services' current factory.
    access = access or AuditRecorder(audit, lambda: built[0].uow())
    vault = Vault(keys, FieldCipher(), access, damage)
    audit.subjects = vault  # details about a subject are sealed under the subject's own key
    services = Services(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        keys=keys,
        vault=vault,
        matcher=DuplicateMatcher(keys, BlindIndexer(keys), vault),
        access=access,
        audit=audit,
        clock=clock,
        deadline_policy=policy,
        damage=damage,
    )
    built.append(services)
    return services


def prepare_database(services: Services) -> UpgradeReport:
    """What `referral-service init` does to a database: Alembic to head, then check (and on first use,
    record: fingerprint, KEK canaries) that this keyring is the one the stored data keys and blind
    indexes belong to, then the data upgrades that need the keys (`services.upgrades`)."""
    from referral_service.db.migrate import upgrade_to_head
    from referral_service.services.keys import verify_keys
    from referral_service.services.upgrades import run_upgrades

    upgrade_to_head(services.engine)
    verify_keys(services)
    return run_upgrades(services)
