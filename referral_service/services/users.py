"""Users, API tokens (stored hashed, shown once) and password sign-in (argon2id)."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from referral_service.db.models import ApiToken, Partner, User
from referral_service.domain.errors import Conflict, Unauthenticated, ValidationFailed
from referral_service.domain.model import Actor, Role

if TYPE_CHECKING:
    from referral_service.bootstrap import Services

_hasher = PasswordHasher()
# Verified against when the name is unknown, so sign-in takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(token.encode()).hexdigest()


def _actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=Role(user.role), partner_id=user.partner_id, name=user.name)


def create_user(services: Services, *, name: str, role: str, partner_id: str | None = None,
                password: str | None = None) -> dict[str, Any]:
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
        user = User(name=name.strip(), role=role_.value, partner_id=partner_id,
                    password_hash=_hasher.hash(password) if password else None)
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError:
            raise Conflict("a user with that name exists") from None
        uow.session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
        uow.commit()
        return {"id": user.id, "name": user.name, "role": user.role, "partner_id": user.partner_id, "token": token}


def actor_for_token(services: Services, token: str) -> Actor:
    with services.uow() as uow:
        row = uow.session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
        if row is None or row.revoked_at is not None or not row.user.active:
            raise Unauthenticated("invalid or revoked token")
        return _actor(row.user)


def actor_for_user_id(services: Services, user_id: str) -> Actor | None:
    with services.uow() as uow:
        user = uow.session.get(User, user_id)
        return _actor(user) if user is not None and user.active else None


def sign_in(services: Services, name: str, password: str) -> Actor:
    with services.uow() as uow:
        user = uow.session.scalars(select(User).where(User.name == name.strip())).first()
        stored = user.password_hash if user is not None and user.active and user.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            raise Unauthenticated("wrong name or password") from None
        if user is None or stored is _DUMMY_HASH:
            raise Unauthenticated("wrong name or password")
        return _actor(user)


def revoke_tokens(services: Services, user_id: str) -> int:
    with services.uow() as uow:
        rows = uow.session.scalars(select(ApiToken).where(ApiToken.user_id == user_id,
                                                          ApiToken.revoked_at.is_(None))).all()
        for row in rows:
            row.revoked_at = services.clock.now()
        uow.commit()
        return len(rows)


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
        return {"id": user.id, "name": user.name, "role": user.role, "partner_id": user.partner_id,
                "token": token, "password": password}
