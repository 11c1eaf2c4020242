"""A case (a referral with its assignments) as the state machine sees it: load, describe, save.

The services load rows, turn them into `lifecycle` state with `state_of`, ask `lifecycle` what a
command does, and hand the `Change` to `save`, which copies it onto the rows, does the deadline
bookkeeping it asks for, counts partner responses and emits the events. Nothing here decides
anything: the rules are in `domain/lifecycle.py` and `domain/access.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from referral_service.db.models import Assignment, Deadline, Partner, Referral, new_id
from referral_service.db.persist import insert_at_commit
from referral_service.db.session import UnitOfWork, transaction_info
from referral_service.domain import events, lifecycle
from referral_service.domain.access import Case
from referral_service.domain.errors import NotFound
from referral_service.domain.lifecycle import (
    AssignmentState,
    Change,
    DeadlineState,
    ReferralState,
    ResolveDeadlines,
    ScheduleDeadline,
)
from referral_service.domain.model import AssignmentStatus, DeadlineKind, DeadlineStatus, ReferralStatus
from referral_service.services.common import for_update

if TYPE_CHECKING:
    from referral_service.services.ports import Services


# -- loading ---------------------------------------------------------------------------------------------
#: The referrals `lock_referrals` locked (with their assignments) in this transaction.
_LOCKED = "referral_service.locked_referrals"


def lock_referrals(session: Session, referral_ids: Collection[str]) -> list[Referral]:
    """Lock several referrals and their assignments in three statements, in id order (so two routers
    locking overlapping sets queue instead of deadlocking), for a batch that moves them all: each
    `lock_referral` of one of them in this transaction then reads nothing more."""
    ids = sorted(set(referral_ids))
    if not ids:
        return []
    found = session.scalars(
        for_update(session, select(Referral).where(Referral.id.in_(ids)).order_by(Referral.id)).execution_options(
            populate_existing=True
        )
    ).all()
    session.scalars(
        for_update(
            session, select(Assignment).where(Assignment.referral_id.in_(ids)).order_by(Assignment.id)
        ).execution_options(populate_existing=True)
    ).all()
    # The session's identity map holds unchanged rows only weakly: keep them here for the transaction.
    transaction_info(session).setdefault(_LOCKED, {}).update((r.id, r) for r in found)
    return list(found)


def lock_referral(session: Session, referral_id: str) -> Referral:
    """The referral, locked (PostgreSQL) before its assignments are read, so every move of one case
    sees the moves before it: its status is derived from all of them."""
    locked: Referral | None = transaction_info(session).get(_LOCKED, {}).get(referral_id)
    if locked is not None:
        # Locked with its assignments earlier in this transaction: no one else can have moved it since,
        # and the session holds every change made to it here.
        return locked
    referral = session.scalars(
        for_update(session, select(Referral).where(Referral.id == referral_id)).execution_options(
            populate_existing=True
        )
    ).first()
    if referral is None:
        raise NotFound("no such referral")
    # Read (and lock) the assignments after the referral's lock is held, whatever was loaded before.
    session.scalars(
        for_update(session, select(Assignment).where(Assignment.referral_id == referral.id)).execution_options(
            populate_existing=True
        )
    ).all()
    return referral


def lock_assignment(session: Session, assignment_id: str) -> Assignment:
    """The assignment, with its referral locked first (the same order as every other move of a case)."""
    referral_id = session.scalar(select(Assignment.referral_id).where(Assignment.id == assignment_id))
    if referral_id is None:
        raise NotFound("no such assignment")
    referral = lock_referral(session, referral_id)
    return next(a for a in referral.assignments if a.id == assignment_id)


def assignment_state(a: Assignment) -> AssignmentState:
    return AssignmentState(
        id=a.id,
        partner_id=a.partner_id,
        service=a.service,
        status=AssignmentStatus(a.status),
        offered_at=a.offered_at,
        responded_at=a.responded_at,
        closed_at=a.closed_at,
        decline_reason=a.decline_reason,
        close_outcome=a.close_outcome,
        services_delivered=tuple(a.services_delivered) if a.services_delivered is not None else None,
    )


def state_of(referral: Referral) -> ReferralState:
    return ReferralState(
        id=referral.id,
        status=ReferralStatus(referral.status),
        needs=tuple(referral.needs),
        risk_level=referral.risk_level,
        consent_given=referral.consent_given,
        consent_withdrawn_at=referral.consent_withdrawn_at,
        assignments=tuple(assignment_state(a) for a in referral.assignments),
    )


def deadline_state(d: Deadline) -> DeadlineState:
    return DeadlineState(
        id=d.id,
        referral_id=d.referral_id,
        assignment_id=d.assignment_id,
        kind=DeadlineKind(d.kind),
        risk_level=d.risk_level,
        status=DeadlineStatus(d.status),
        due_at=d.due_at,
        fired_at=d.fired_at,
        partner_id=d.partner_id,
        service=d.assignment.service if d.assignment is not None else None,
        wake_at=d.wake_at,
        noticed_at=d.noticed_at,
        reminders=d.reminders or 0,
        escalated_at=d.escalated_at,
    )


_DEADLINE_FIELDS = ("status", "fired_at", "wake_at", "noticed_at", "reminders", "escalated_at")


def copy_deadline(row: Deadline, state: DeadlineState) -> None:
    """What a deadline move changed, onto its row."""
    for name in _DEADLINE_FIELDS:
        value = getattr(state, name)
        value = value.value if isinstance(value, DeadlineStatus) else value
        if getattr(row, name) != value:
            setattr(row, name, value)


# -- describing, for the access policy ----------------------------------------------------------------------
def case_for_reading(referral: Referral) -> Case:
    return Case.of_referral(
        caseworker_id=referral.caseworker_id,
        consent_given=referral.consent_given,
        consent_withdrawn=referral.consent_withdrawn_at is not None,
        consent_share=referral.consent_share,
        assignments=[(a.partner_id, a.status) for a in referral.assignments],
    )


def case_for_assignment(referral: Referral, a: Assignment) -> Case:
    return Case.of_assignment(
        caseworker_id=referral.caseworker_id,
        consent_given=referral.consent_given,
        consent_withdrawn=referral.consent_withdrawn_at is not None,
        consent_share=referral.consent_share,
        partner_id=a.partner_id,
    )


# -- saving -------------------------------------------------------------------------------------------------
_ASSIGNMENT_FIELDS = ("status", "responded_at", "closed_at", "decline_reason", "close_outcome")


def save(
    uow: UnitOfWork,
    services: Services,
    referral: Referral,
    change: Change,
    at: datetime,
    *,
    new_rows: dict[str, Assignment] | None = None,
) -> None:
    """Copy `change` onto the rows (only what changed: unchanged rows keep their version), then do
    its deadline bookkeeping, count partner responses and emit its events."""
    session = uow.session
    state = change.referral
    if referral.status != state.status:
        referral.status = state.status
    if referral.consent_withdrawn_at != state.consent_withdrawn_at:
        referral.consent_withdrawn_at = state.consent_withdrawn_at
    rows = {a.id: a for a in referral.assignments} | (new_rows or {})
    for a_state in state.assignments:
        row = rows[a_state.id]
        if assignment_state(row) == a_state:
            continue
        for name in _ASSIGNMENT_FIELDS:
            if getattr(row, name) != getattr(a_state, name):
                setattr(row, name, getattr(a_state, name))
        delivered = list(a_state.services_delivered) if a_state.services_delivered is not None else None
        if row.services_delivered != delivered:
            row.services_delivered = delivered
    for order in change.deadlines:
        if isinstance(order, ScheduleDeadline):
            # Written at commit with the batch's other deadlines (db.persist); its assignment's row is
            # written already (an offer's at once: `assignments._offer`).
            insert_at_commit(
                session,
                Deadline,
                {
                    "id": new_id(),
                    "referral_id": referral.id,
                    "assignment_id": rows[order.assignment_id].id,
                    "partner_id": order.partner_id,
                    "kind": order.kind.value,
                    "risk_level": referral.risk_level,
                    "due_at": order.due_at,
                    "status": DeadlineStatus.PENDING.value,
                    "fired_at": None,
                    "wake_at": order.first_wake,
                    "noticed_at": None,
                    "reminders": 0,
                    "escalated_at": None,
                },
            )
        else:
            resolve_deadlines(session, order, at)
    for response in change.responses:
        count_response(session, response)
    emit(uow, change.events)


def resolve_deadlines(session: Session, order: ResolveDeadlines, at: datetime) -> None:
    query = select(Deadline).where(
        Deadline.assignment_id == order.assignment_id,
        Deadline.status.in_(lifecycle.resolvable(order.command)),
        Deadline.kind.in_([k.value for k in order.kinds]),
    )
    for d in session.scalars(query):
        copy_deadline(d, lifecycle.handle_deadline(deadline_state(d), order.command(d.id), at=at).deadline)


def count_response(session: Session, response: lifecycle.PartnerResponse) -> None:
    partner = session.get(Partner, response.partner_id)
    if partner is None:
        return
    # Increments in SQL, not Python: staff of one partner answering different offers at once would
    # otherwise overwrite each other's counts.
    partner.responses = Partner.responses + 1
    partner.response_seconds_total = Partner.response_seconds_total + response.seconds
    if response.accepted:
        partner.offers_accepted = Partner.offers_accepted + 1


def emit(uow: UnitOfWork, out: Iterable[events.Event]) -> None:
    """Into the outbox, in this transaction; what the partner must hear of also to its own queue."""
    for event in out:
        uow.emit(event)
        if isinstance(event, lifecycle.PARTNER_NOTICES) and event.partner_id:
            uow.deliver_to_partner(event, event.partner_id)
