"""Timers as rows: fire what is due, once, however many schedulers run."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, literal, select, tuple_
from sqlalchemy.orm import selectinload

from referral_service.db.models import Assignment, Deadline, UTCDateTime
from referral_service.db.session import UnitOfWork
from referral_service.domain import lifecycle
from referral_service.domain.access import Action
from referral_service.domain.commands import ExpireOffer
from referral_service.domain.errors import ValidationFailed
from referral_service.domain.model import RISK_LEVELS, Actor, DeadlineKind, DeadlineStatus
from referral_service.services import cases
from referral_service.services.authorization import authorize
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from referral_service.services.ports import Services

# Listed for supervisors once due: not yet fired, or fired and still unmet.
OUTSTANDING = (DeadlineStatus.PENDING.value, DeadlineStatus.OVERDUE.value)


def fire_due_deadlines(services: Services, batch_size: int = 100) -> int:
    """One tick of the scheduler: every deadline whose `wake_at` has come, one batch at a time.

    Before due the partner is told it is coming due (`followup.due`); at due an unanswered offer
    expires (the router then routes onward) and a missed contact or follow-up becomes overdue
    (`followup.overdue`, to the partner's own queue too); while it stays unmet it is reminded every
    `remind_every` and, after `escalate_after` reminders, escalated to the supervisors. Only rows whose
    time has come are read (an index on `wake_at`), so a tick costs what is due, not what is open.
    On PostgreSQL each row is locked with SKIP LOCKED: any number of schedulers share the work and
    each wake happens once. Returns how many deadlines it handled."""
    now = services.clock.now()
    policy = services.deadline_policy
    with services.uow() as uow:
        session = uow.session
        postgres = session.get_bind().dialect.name == "postgresql"
        query = (
            select(Deadline)
            .where(Deadline.wake_at <= now)
            .order_by(Deadline.wake_at)
            .limit(batch_size)
            .options(selectinload(Deadline.assignment))
        )
        if postgres:
            query = query.with_for_update(skip_locked=True, of=Deadline)
        fired = 0
        for d in session.scalars(query).all():
            if d.kind == DeadlineKind.ACCEPT and d.assignment_id and postgres and not _claim(session, d.assignment_id):
                continue
            change = lifecycle.wake(cases.deadline_state(d), at=now, policy=policy)
            cases.copy_deadline(d, change.deadline)
            cases.emit(uow, change.events)
            if change.expires:
                _expire(uow, services, change.expires, now)
            fired += 1
        uow.commit()
        return fired


def _claim(session: Any, assignment_id: str) -> bool:
    """Lock the offer's row unless someone is answering it right now: they hold it and will want this
    deadline's row next, so waiting for each other would deadlock. Left for them; the next tick sees."""
    return (
        session.scalars(
            select(Assignment.id).where(Assignment.id == assignment_id).with_for_update(skip_locked=True)
        ).first()
        is not None
    )


def _expire(uow: UnitOfWork, services: Services, assignment_id: str, now: datetime) -> None:
    """The offer ends unanswered, if it still is unanswered (an answer may have come first)."""
    a = uow.session.get(Assignment, assignment_id)
    if a is None:
        return
    state, cmd = cases.state_of(a.referral), ExpireOffer(a.id)
    if lifecycle.allows(state, cmd):
        cases.save(
            uow, services, a.referral, lifecycle.handle(state, cmd, at=now, policy=services.deadline_policy), now
        )


def overdue(services: Services, actor: Actor, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
    """Every overdue deadline, riskiest then oldest first; keyset-paginated on (risk, due, id). Each
    says how many overdue reminders went out, whether it was escalated and how long it is overdue."""
    authorize(services, actor, Action.LIST_OVERDUE)
    limit = clamp_limit(limit)
    now = services.clock.now()
    risk_rank = case({level: i for i, level in enumerate(RISK_LEVELS)}, value=Deadline.risk_level, else_=99)
    query = (
        select(Deadline)
        .where(Deadline.status.in_(OUTSTANDING), Deadline.due_at <= now)
        .order_by(risk_rank, Deadline.due_at, Deadline.id)
    )
    if cursor:
        due, marker = decode_cursor(cursor)
        rank_text, _, last_id = marker.partition(":")
        if not rank_text.isdigit():
            raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]})
        rank = int(rank_text)
        query = query.where(
            tuple_(risk_rank, Deadline.due_at, Deadline.id)
            > tuple_(literal(rank), literal(due, UTCDateTime()), literal(last_id))
        )
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        items = [
            {
                "id": d.id,
                "referral_id": d.referral_id,
                "assignment_id": d.assignment_id,
                "partner_id": d.partner_id,
                "kind": d.kind,
                "due_at": d.due_at,
                "risk_level": d.risk_level,
                "reminders": d.reminders or 0,
                "escalated": d.escalated_at is not None,
                "escalated_at": d.escalated_at,
                "overdue_seconds": max(0, int((now - d.due_at).total_seconds())),
            }
            for d in rows[:limit]
        ]
        nxt = None
        if len(rows) > limit:
            last = rows[limit - 1]
            nxt = encode_cursor(last.due_at, f"{RISK_LEVELS.index(last.risk_level)}:{last.id}")
        return {"items": items, "next": nxt}


def effective_policy(services: Services, actor: Actor) -> dict[str, Any]:
    """The deadline policy in force (built-in values with the policy file's overrides), for supervisors."""
    authorize(services, actor, Action.LIST_OVERDUE)
    return {"levels": services.deadline_policy.as_data()}
