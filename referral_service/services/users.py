"""Users, API tokens (stored hashed, shown once), password sign-in (argon2id) and revoking a user."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError

from referral_service.db.models import ApiToken, Partner, User
from referral_service.db.session import READ_ONLY
from referral_service.domain import auth
from referral_service.domain.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from referral_service.domain.model import Actor, Role
from referral_service.domain.text import unstorable
from referral_service.services import sessions

if TYPE_CHECKING:
    from referral_service.services.ports import Services

_hasher = PasswordHasher()
# Verified against when the name is unknown, so sign-in takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(token.encode()).hexdigest()


def _actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=Role(user.role), partner_id=user.partner_id, name=user.name)


def create_user(
    services: Services, *, name: str, role: str, partner_id: str | None = None, password: str | None = None
) -> dict[str, Any]:
    try:
        role_ = Role(role)
    except ValueError:
        raise ValidationFailed("unknown role", {"role": [f"one of {', '.join(r.value for r in Role)}"]}) from None
    if not name.strip():
        raise ValidationFailed("name is required", {"name": ["required"]})
    if role_ == Role.PARTNER and not partner_id:
        raise ValidationFailed("partner staff need --partner", {"partner": ["required for the partner role"]})
    if role_ != Role.PARTNER and partner_id:
        raise ValidationFailed("only partner staff belong to a partner", {"partner": ["only for the partner role"]})
    token = "rs_" + secrets.token_urlsafe(32)
    with services.uow() as uow:
        if partner_id and uow.session.get(Partner, partner_id) is None:
            raise ValidationFailed("unknown partner", {"partner": [f"no partner {partner_id}"]})
        user = User(
            name=name.strip(),
            role=role_.value,
            partner_id=partner_id,
            password_hash=_hasher.hash(password) if password else None,
        )
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError:
            raise Conflict("a user with that name exists") from None
        uow.session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
        services.access.record(
            actor=None, action="user.create", referral_id=None, details={"user_id": user.id, "role": user.role}
        )
        uow.commit()
        return {"id": user.id, "name": user.name, "role": user.role, "partner_id": user.partner_id, "token": token}


# Built once: every API request asks it. Only a live token of an active user matches, so a revoked token
# or a deactivated user is refused on the very next request (nothing about a token is cached).
_ACTOR_FOR_TOKEN = (
    select(User.id, User.role, User.partner_id, User.name)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None), User.active.is_(True))
    .limit(1)
)


def actor_for_token(services: Services, token: str) -> Actor:
    # One statement on a read-only connection: no ORM objects, and on SQLite a deferred transaction, so
    # checking a token never waits for (or holds) the write lock that intakes queue on.
    with services.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        row = conn.execute(_ACTOR_FOR_TOKEN, {"token_hash": hash_token(token)}).first()
    if row is None:
        raise Unauthenticated("invalid or revoked token")
    return Actor(user_id=row.id, role=Role(row.role), partner_id=row.partner_id, name=row.name)


def sign_in(services: Services, name: str, password: str) -> Actor:
    """Password sign-in with a per-account pause after repeated failures (kept in the database, so every
    worker and host sees it). Every refusal is the same Unauthenticated, whatever the reason."""
    now = services.clock.now()
    with services.uow() as uow:
        # No name holds a NUL or a lone surrogate, and the database would refuse the query (a 500 on the
        # sign-in page): such a name is unknown.
        user = None if unstorable(name) else uow.session.scalars(select(User).where(User.name == name.strip())).first()
        user_id = user.id if user is not None else None
        refused = (
            "unknown_name"
            if user is None
            else "inactive"
            if not user.active
            else "no_password"
            if not user.password_hash
            else None
        )
        stored = user.password_hash if user is not None and refused is None and user.password_hash else _DUMMY_HASH
        actor = _actor(user) if user is not None else None
        until = user.locked_until if user is not None else None
    # Verified outside the transaction (argon2 is slow on purpose; no lock is held meanwhile), and
    # always, so an unknown name or a paused account takes as long as a wrong password.
    try:
        # A password no one could have set (it has no UTF-8 form) is wrong without hashing it.
        right = not unstorable(password) and bool(_hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        right = False
    if refused is not None or user_id is None or actor is None:
        _record_sign_in(services, user_id, "denied", refused)
        raise Unauthenticated("wrong name or password")
    paused = until is not None and until > now
    if right and not paused:
        with services.uow() as uow:
            uow.session.execute(
                update(User)
                .where(User.id == user_id, or_(User.failed_logins != 0, User.locked_until.is_not(None)))
                .values(failed_logins=0, locked_until=None)
            )
            uow.commit()
        _record_sign_in(services, user_id, "allowed", None)
        return actor
    if not right:
        _count_failure(services, user_id, now)
    _record_sign_in(services, user_id, "denied", "locked" if paused else "wrong_password")
    raise Unauthenticated("wrong name or password")


def _count_failure(services: Services, user_id: str, now: datetime) -> None:
    # The increment is one UPDATE, so concurrent failures never lose a count; its row lock (PostgreSQL) or
    # the IMMEDIATE transaction (SQLite) keeps the pause that follows in step with the count.
    with services.uow() as uow:
        failures = uow.session.execute(
            update(User)
            .where(User.id == user_id)
            .values(failed_logins=User.failed_logins + 1)
            .returning(User.failed_logins)
        ).scalar_one()
        until = auth.locked_until(int(failures), now)
        if until is not None:
            uow.session.execute(update(User).where(User.id == user_id).values(locked_until=until))
        uow.commit()


def _record_sign_in(services: Services, user_id: str | None, outcome: str, reason: str | None) -> None:
    # Identifiers only: never the typed name or password.
    details = {k: v for k, v in (("user_id", user_id), ("reason", reason)) if v}
    services.access.record(actor=None, action="auth.sign_in", referral_id=None, outcome=outcome, details=details)


def revoke_tokens(services: Services, user_id: str) -> int:
    with services.uow() as uow:
        rows = uow.session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        ).all()
        for row in rows:
            row.revoked_at = services.clock.now()
        uow.commit()
        return len(rows)


def revoke_user(services: Services, user_id: str) -> dict[str, Any]:
    """End a user's access everywhere at once, in one transaction: the account is deactivated (password
    sign-in refused), every API token revoked and every web session ended."""
    now = services.clock.now()
    with services.uow() as uow:
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user with id {user_id}")
        user.active = False
        tokens = uow.session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        ).all()
        for token in tokens:
            token.revoked_at = now
        ended = sessions.end_all_for_user(uow.session, user_id, now)
        services.access.record(actor=None, action="user.revoke", referral_id=None, details={"user_id": user_id})
        uow.commit()
        return {"id": user.id, "name": user.name, "tokens_revoked": len(tokens), "sessions_ended": ended}


def ensure_demo_user(services: Services, *, name: str, role: str, partner_id: str | None) -> dict[str, Any]:
    """Create the demo user, or give an existing one a fresh token and password; returns both."""
    password = secrets.token_urlsafe(9)
    with services.uow() as uow:
        user = uow.session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            uow.rollback()
            created = create_user(services, name=name, role=role, partner_id=partner_id, password=password)
            return {**created, "password": password}
        token = "rs_" + secrets.token_urlsafe(32)
        user.password_hash = _hasher.hash(password)
        uow.session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
        uow.commit()
        return {
            "id": user.id,
            "name": user.name,
            "role": user.role,
            "partner_id": user.partner_id,
            "token": token,
            "password": password,
        }
