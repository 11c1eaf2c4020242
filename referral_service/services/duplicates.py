"""Possible duplicates: recorded at intake, decided by supervisors, never linked automatically."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from referral_service.db.models import PossibleDuplicate, Referral, Subject, new_id
from referral_service.domain import lifecycle
from referral_service.domain.access import COMMAND_ACTIONS, Action
from referral_service.domain.commands import ConfirmDuplicate, DismissDuplicate
from referral_service.domain.duplicates import DuplicateStatus, merged_person
from referral_service.domain.errors import NotFound
from referral_service.domain.model import Actor
from referral_service.services import cases
from referral_service.services.authorization import authorize, decide, screen
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor, for_update, must
from referral_service.services.matching import SubjectMatch

if TYPE_CHECKING:
    from referral_service.services.ports import Services

# What a supervisor needs to tell two people apart; the rest stays on the referrals themselves.
SHOWN_FIELDS = ("full_name", "date_of_birth")
_COLUMN_WORDS = {"cnic": "CNIC", "phone": "phone number"}


# -- at intake ------------------------------------------------------------------------------------
def record_matches(
    services: Services,
    session: Session,
    actor: Actor,
    subject: Subject,
    referral: Referral,
    matches: Sequence[SubjectMatch],
    now: datetime,
) -> list[dict[str, Any]]:
    """One pending question per earlier subject that matched; the submitter's warnings in return.

    The warnings name only matching referrals the submitter may already see. Anything else leaves
    the answer exactly as if nothing had matched: same keys, no warning, no reference.
    """
    references: list[tuple[datetime, str]] = []
    matched_on: set[str] = set()
    for match in matches:
        earlier = session.scalars(
            select(Referral)
            .where(Referral.subject_id == match.subject.id)
            .order_by(Referral.created_at, Referral.reference)
        ).all()
        if not earlier:  # a subject without a referral is not a person anyone referred
            continue
        session.add(
            PossibleDuplicate(
                id=new_id(),
                subject_id=subject.id,
                referral_id=referral.id,
                earlier_subject_id=match.subject.id,
                earlier_referral_id=earlier[0].id,
                matched_on=list(match.matched_on),
                status=DuplicateStatus.PENDING.value,
                created_at=now,
            )
        )
        seen = [
            r
            for r in earlier
            if decide(services, actor, Action.LEARN_OF_MATCH, cases.case_for_reading(r), referral_id=r.id).allowed
        ]
        if seen:
            matched_on.update(match.matched_on)
            references.extend((r.created_at, r.reference) for r in seen)
    if not references:
        return []
    columns = [c for c in _COLUMN_WORDS if c in matched_on]
    words = " and ".join(_COLUMN_WORDS[c] for c in columns)
    return [
        {
            "code": "possible_repeat_referral",
            # Names the fields, never their values.
            "message": f"the {words} matches an earlier referral; this one is kept separate until a supervisor "
            "confirms they are the same person",
            "matched_on": columns,
            # Oldest first; references count up, so they order referrals made in the same instant.
            "earlier_references": [ref for _, ref in sorted(references)],
        }
    ]


# -- supervisors ------------------------------------------------------------------------------------
def _summary(session: Session, dup: PossibleDuplicate) -> dict[str, Any]:
    subject = session.get(Subject, dup.subject_id)
    return {
        "id": dup.id,
        "status": dup.status,
        "matched_on": dup.matched_on,
        "created_at": dup.created_at,
        "decided_by": dup.decided_by,
        "decided_at": dup.decided_at,
        "referral_id": dup.referral_id,
        "subject_id": dup.subject_id,
        "earlier_referral_id": dup.earlier_referral_id,
        "earlier_subject_id": dup.earlier_subject_id,
        "person_id": subject.person_id if subject is not None else None,
    }


def _side(session: Session, services: Services, actor: Actor, referral_id: str, subject_id: str) -> dict[str, Any]:
    referral = must(session.get(Referral, referral_id), "referral")
    subject = must(session.get(Subject, subject_id), "subject")
    revealed = services.vault.reveal_subject(
        session, subject, SHOWN_FIELDS, actor=actor, referral_id=referral.id, action="duplicate.read"
    )
    return {
        "id": referral.id,
        "reference": referral.reference,
        "status": referral.status,
        "caseworker_id": referral.caseworker_id,
        "created_at": referral.created_at,
        "subject_id": subject.id,
        "subject": {**revealed, "district": subject.district},
    }


def duplicate_view(session: Session, services: Services, dup: PossibleDuplicate, actor: Actor) -> dict[str, Any]:
    return {
        **_summary(session, dup),
        "referral": _side(session, services, actor, dup.referral_id, dup.subject_id),
        "earlier_referral": _side(session, services, actor, dup.earlier_referral_id, dup.earlier_subject_id),
    }


def list_duplicates(
    services: Services, actor: Actor, *, status: str | None, limit: int | None, cursor: str | None
) -> dict[str, Any]:
    """Oldest question first: the queue is worked through from the front."""
    authorize(services, actor, Action.LIST_DUPLICATES)
    limit = clamp_limit(limit)
    query = (
        select(PossibleDuplicate)
        .where(PossibleDuplicate.status == (status or DuplicateStatus.PENDING.value))
        .order_by(PossibleDuplicate.created_at, PossibleDuplicate.id)
    )
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                PossibleDuplicate.created_at > at,
                and_(PossibleDuplicate.created_at == at, PossibleDuplicate.id > last_id),
            )
        )
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        page = rows[:limit]
        # Both sides of every pair in three queries (subjects, their keys, referrals), not four per pair.
        services.vault.load_subjects(uow.session, [s for d in page for s in (d.subject_id, d.earlier_subject_id)])
        sides = [r for d in page for r in (d.referral_id, d.earlier_referral_id)]
        held = uow.session.scalars(select(Referral).where(Referral.id.in_(sides))).all() if sides else []
        items = [duplicate_view(uow.session, services, d, actor) for d in page]
        del held  # the referrals only had to stay in the session while the views were made
        nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        uow.commit()  # the reveals' audit entries
        return {"items": items, "next": nxt}


def _decide(services: Services, cmd: ConfirmDuplicate | DismissDuplicate, actor: Actor) -> dict[str, Any]:
    action = COMMAND_ACTIONS[type(cmd)]
    screen(services, actor, action)
    with services.uow() as uow:
        session = uow.session
        dup = session.scalars(
            for_update(session, select(PossibleDuplicate).where(PossibleDuplicate.id == cmd.duplicate_id))
        ).one_or_none()
        if dup is None:
            raise NotFound("no such possible duplicate")
        # The decision touches both referrals: one decision (and record) for each.
        for referral_id, subject_id in (
            (dup.referral_id, dup.subject_id),
            (dup.earlier_referral_id, dup.earlier_subject_id),
        ):
            authorize(services, actor, action, referral_id=referral_id, subject_id=subject_id)
        status = lifecycle.decide_duplicate(DuplicateStatus(dup.status), cmd)
        if status is DuplicateStatus.CONFIRMED:
            _join(session, dup.subject_id, dup.earlier_subject_id)
        dup.status, dup.decided_by, dup.decided_at = status.value, actor.user_id, services.clock.now()
        session.flush()
        body = _summary(session, dup)
        uow.commit()
        return body


def _join(session: Session, *subject_ids: str) -> str:
    """One person id for both subjects and for everyone already linked to either. Only the link is
    written: no field moves between subjects, so each referral still shows (and shares under its own
    consent) only what was entered on it."""
    # Lock both rows in id order first, so two confirmations sharing a subject see each other's group
    # instead of splitting it (and cannot deadlock on these rows).
    subjects = session.scalars(
        for_update(session, select(Subject).where(Subject.id.in_(subject_ids)).order_by(Subject.id))
    ).all()
    person, existing = merged_person((s.person_id for s in subjects), new_id())
    if existing:
        session.execute(
            update(Subject)
            .where(Subject.person_id.in_(existing))
            .values(person_id=person)
            .execution_options(synchronize_session="fetch")
        )
    for subject in subjects:
        subject.person_id = person
    return person


def confirm(services: Services, cmd: ConfirmDuplicate, actor: Actor) -> dict[str, Any]:
    return _decide(services, cmd, actor)


def dismiss(services: Services, cmd: DismissDuplicate, actor: Actor) -> dict[str, Any]:
    return _decide(services, cmd, actor)


# -- reading a referral ---------------------------------------------------------------------------------
def linked_referrals(session: Session, referral: Referral, subject: Subject) -> list[dict[str, Any]]:
    """The other referrals of the same person (confirmed links, and older referrals that share the row)."""
    same = Referral.subject_id == subject.id
    if subject.person_id:
        same = or_(same, Referral.subject_id.in_(select(Subject.id).where(Subject.person_id == subject.person_id)))
    rows = session.scalars(
        select(Referral).where(same, Referral.id != referral.id).order_by(Referral.created_at, Referral.reference)
    ).all()
    return [{"id": r.id, "reference": r.reference, "status": r.status} for r in rows]
