"""Who saw or changed what: every reveal of personal data and every change reports here.

`AccessRecorder` is the seam: `AuditRecorder` (the service's) seals each record into the audit log in
the transaction of the action it records (`referral_service.audit.log`); `LogAccessRecorder` (tests
and tools without a database) writes identifiers to the structured log. `details` carries identifiers
and fixed codes (e.g. which account a refused sign-in was for, and why), never typed text such as a
name or a password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from referral_service.audit.log import SYSTEM, AuditEvent
from referral_service.db.session import current_unit_of_work
from referral_service.domain.model import Actor

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from referral_service.audit.log import AuditLog
    from referral_service.db.session import UnitOfWork

log = logging.getLogger("referral_service.access")

# Purpose of use, when the caller names one (FHIR's v3 PurposeOfUse codes are of this shape).
PURPOSE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class RequestContext:
    """Where the current action comes from: set by the HTTP layer per request and by the CLI."""

    request_id: str | None = None
    purpose: str | None = None
    operator: str | None = None  # the account that ran a CLI command, for actions with no signed-in actor
    via: str | None = None  # "api", "web", "cli"


# A frozen dataclass: the shared default cannot be changed in place.
_REQUEST: ContextVar[RequestContext] = ContextVar("referral_service.request", default=RequestContext())  # noqa: B039


def request_context() -> RequestContext:
    return _REQUEST.get()


@contextmanager
def in_request(context: RequestContext) -> Iterator[None]:
    token = _REQUEST.set(context)
    try:
        yield
    finally:
        _REQUEST.reset(token)


def enter_request(context: RequestContext) -> Token[RequestContext]:
    """For a request handled across hooks (Flask's before/teardown): pass the token to `leave_request`."""
    return _REQUEST.set(context)


def leave_request(token: Token[RequestContext]) -> None:
    _REQUEST.reset(token)


def set_request_context(context: RequestContext) -> None:
    """For a process that is one request from start to end (a CLI command)."""
    _REQUEST.set(context)


class AccessRecorder(Protocol):
    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "allowed",
        details: Mapping[str, str] | None = None,
    ) -> None: ...


class LogAccessRecorder:
    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "allowed",
        details: Mapping[str, str] | None = None,
    ) -> None:
        log.info(
            "access action=%s outcome=%s actor=%s role=%s referral=%s subject=%s fields=%s details=%s",
            action,
            outcome,
            actor.user_id if actor else "system",
            actor.role.value if actor else "system",
            referral_id,
            subject_id,
            ",".join(fields),
            ",".join(f"{k}:{v}" for k, v in sorted((details or {}).items())),
        )


class AuditRecorder:
    """Records into the audit log, in the transaction of the action.

    Inside a unit of work the entry joins its transaction: it commits with the action or not at all.
    An allowed record marks the unit of work as one that must commit (a read already happened);
    a denied one is also kept past the rollback that usually follows a refusal. Outside any unit of
    work (a refusal before anything is loaded, a sign-in, a CLI check) the entry gets a transaction
    of its own.
    """

    def __init__(self, log_: AuditLog, uow_factory: Callable[[], UnitOfWork]) -> None:
        self.log = log_
        self._uow = uow_factory

    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "allowed",
        details: Mapping[str, str] | None = None,
    ) -> None:
        context = request_context()
        if actor is not None:
            actor_id, role, partner_id = actor.user_id, actor.role.value, actor.partner_id
        else:
            actor_id, role, partner_id = context.operator or SYSTEM, "operator" if context.operator else SYSTEM, None
        extra = dict(details or {})
        if context.via:
            extra.setdefault("via", context.via)
        event = AuditEvent(
            action=action,
            outcome=outcome,
            referral_id=referral_id,
            subject_id=subject_id,
            request_id=context.request_id,
            purpose=context.purpose,
            fields=tuple(fields),
            details=extra,
            actor_id=actor_id,
            role=role,
            partner_id=partner_id,
        )
        uow = current_unit_of_work()
        if uow is None:
            with self._uow() as own:
                self.log.append(own.session, event)
                own.commit()
            return
        self.log.append(uow.session, event)
        if outcome == "allowed":
            uow.must_commit()
        else:

            def again(session: Session) -> None:
                self.log.append(session, event)

            uow.keep_on_rollback(again)
