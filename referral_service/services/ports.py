"""What the service layer needs from its wiring, as an interface the service layer owns.

Service functions are typed against `Services` here, never against the wiring module
(`referral_service.bootstrap`), so the dependency points down: `bootstrap.Services` (the one bag the
app, the CLI and the workers build) satisfies this protocol structurally, and a test may pass any
smaller object that has these members. The layer rule is checked by import-linter (`make lint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from referral_service.audit.log import AuditLog
    from referral_service.clock import Clock
    from referral_service.config import Settings
    from referral_service.crypto import KeyProvider
    from referral_service.db.session import UnitOfWork
    from referral_service.domain.deadlines import DeadlinePolicy
    from referral_service.services.access import AccessRecorder
    from referral_service.services.damage import DamageReporter
    from referral_service.services.matching import DuplicateMatcher
    from referral_service.services.vault import Vault


class Services(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine:
        """Only for maintenance that works on the database files (purging old row versions)."""
        ...

    @property
    def keys(self) -> KeyProvider: ...

    @property
    def vault(self) -> Vault:
        """Seals, opens (recording every reveal) and erases personal data."""
        ...

    @property
    def matcher(self) -> DuplicateMatcher:
        """Finds earlier subjects with the same CNIC or phone (blind indexes)."""
        ...

    @property
    def access(self) -> AccessRecorder:
        """Where access is recorded: decisions through `services.authorization`, reveals by the vault,
        and the few actions that are neither (sign-in, erasure, records check)."""
        ...

    @property
    def audit(self) -> AuditLog:
        """The tamper-evident audit log the recorder writes to; queries, proofs and verification."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def deadline_policy(self) -> DeadlinePolicy: ...

    @property
    def damage(self) -> DamageReporter: ...

    def uow(self) -> UnitOfWork:
        """A new unit of work: one transaction that rolls back unless committed."""
        ...
