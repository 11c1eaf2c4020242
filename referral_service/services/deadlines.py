"""Timers as rows: fire what is due, once, however many schedulers run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import case, literal, select, tuple_

from referral_service.db.models import Assignment, Deadline, UTCDateTime
from referral_service.domain import events
from referral_service.domain.errors import Forbidden, ValidationFailed
from referral_service.domain.model import RISK_LEVELS, Actor, AssignmentStatus, Role
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from referral_service.services.ports import Services


def fire_due_deadlines(services: Services, batch_size: int = 100) -> int:
    """Expire unanswered offers (the router then routes onward); flag missed follow-ups as overdue."""
    now = services.clock.now()
    with services.uow() as uow:
        session = uow.session
        query = (select(Deadline).where(Deadline.status == "pending", Deadline.due_at <= now)
                 .order_by(Deadline.due_at).limit(batch_size))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = session.scalars(query).all()
        for d in due:
            d.fired_at = now
            if d.kind == "accept":
                d.status = "fired"
                a = session.get(Assignment, d.assignment_id) if d.assignment_id else None
                if a is not None and a.status == AssignmentStatus.OFFERED:
                    a.status, a.responded_at = AssignmentStatus.EXPIRED, now
                    event = events.AssignmentExpired(referral_id=d.referral_id, assignment_id=a.id,
                                                     partner_id=a.partner_id, service=a.service)
                    uow.emit(event)
                    uow.deliver_to_partner(event, a.partner_id)
            else:
                d.status = "overdue"
                uow.emit(events.FollowUpOverdue(referral_id=d.referral_id, assignment_id=d.assignment_id,
                                                deadline_id=d.id, kind=d.kind, risk_level=d.risk_level))
        uow.commit()
        return len(due)


def overdue(services: Services, actor: Actor, *, limit: int | None = None,
            cursor: str | None = None) -> dict[str, Any]:
    """Every overdue deadline, riskiest then oldest first; keyset-paginated on (risk, due, id)."""
    if actor.role != Role.SUPERVISOR:
        raise Forbidden("overdue deadlines are for supervisors")
    limit = clamp_limit(limit)
    now = services.clock.now()
    risk_rank = case({level: i for i, level in enumerate(RISK_LEVELS)}, value=Deadline.risk_level, else_=99)
    query = (select(Deadline).where(Deadline.status.in_(("pending", "overdue")), Deadline.due_at <= now)
             .order_by(risk_rank, Deadline.due_at, Deadline.id))
    if cursor:
        due, marker = decode_cursor(cursor)
        rank_text, _, last_id = marker.partition(":")
        if not rank_text.isdigit():
            raise ValidationFailed("invalid cursor", {"cursor": ["not a cursor this API returned"]})
        rank = int(rank_text)
        query = query.where(tuple_(risk_rank, Deadline.due_at, Deadline.id) > tuple_(
            literal(rank), literal(due, UTCDateTime()), literal(last_id)))
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        items = [{"id": d.id, "referral_id": d.referral_id, "assignment_id": d.assignment_id,
                  "partner_id": d.partner_id, "kind": d.kind, "due_at": d.due_at, "risk_level": d.risk_level}
                 for d in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            last = rows[limit - 1]
            nxt = encode_cursor(last.due_at, f"{RISK_LEVELS.index(last.risk_level)}:{last.id}")
        return {"items": items, "next": nxt}
