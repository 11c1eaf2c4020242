"""Server-side web sessions: the cookie holds a random 256-bit id, the database only its SHA-256 digest.

Ending the row (logout, revoke, time-out) ends the session for every copy of the cookie at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from referral_service.db.models import User, WebSession
from referral_service.domain.auth import SessionPolicy
from referral_service.domain.model import Actor, Role

if TYPE_CHECKING:
    from referral_service.services.ports import Services

_MAX_TOKEN_LENGTH = 100  # token_urlsafe(32) is 43 characters; anything far longer is not ours


def policy(services: Services) -> SessionPolicy:
    settings = services.settings
    return SessionPolicy(
        idle=timedelta(minutes=settings.session_idle_minutes), lifetime=timedelta(hours=settings.session_max_hours)
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(services: Services, user_id: str) -> str:
    """A new session for a user who just proved who they are; returns the id for the cookie (shown once)."""
    token = secrets.token_urlsafe(32)
    now = services.clock.now()
    with services.uow() as uow:
        _prune(uow.session, policy(services), now)
        uow.session.add(WebSession(id_hash=_digest(token), user_id=user_id, created_at=now, last_seen_at=now))
        uow.commit()
    return token


def resolve(services: Services, token: str) -> Actor | None:
    """The signed-in person for a session id, or None when it is unknown, ended, timed out or the user revoked."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    now = services.clock.now()
    with services.uow() as uow:
        row = uow.session.get(WebSession, _digest(token))
        if row is None or row.ended_at is not None:
            return None
        user = uow.session.get(User, row.user_id)
        rules = policy(services)
        if (
            user is None
            or not user.active
            or rules.expired(created_at=row.created_at, last_seen_at=row.last_seen_at, now=now)
        ):
            row.ended_at = now
            uow.commit()
            return None
        if rules.needs_touch(row.last_seen_at, now):
            row.last_seen_at = now
            uow.commit()
        return Actor(user_id=user.id, role=Role(user.role), partner_id=user.partner_id, name=user.name)


def end(services: Services, token: str) -> None:
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return
    with services.uow() as uow:
        uow.session.execute(
            update(WebSession)
            .where(WebSession.id_hash == _digest(token), WebSession.ended_at.is_(None))
            .values(ended_at=services.clock.now())
        )
        uow.commit()


def end_all_for_user(session: Session, user_id: str, now: datetime) -> int:
    """Inside the caller's unit of work (revoking a user ends everything in one transaction)."""
    result = session.execute(
        update(WebSession).where(WebSession.user_id == user_id, WebSession.ended_at.is_(None)).values(ended_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _prune(session: Session, rules: SessionPolicy, now: datetime) -> None:
    ended, idle, started = rules.prune_before(now)
    session.execute(
        delete(WebSession).where(
            or_(WebSession.ended_at < ended, WebSession.last_seen_at < idle, WebSession.created_at < started)
        )
    )
