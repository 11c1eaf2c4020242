"""The auditors' side of the audit log: queries, reports, verification, proofs; and the integrator step.

Every call here is itself audited (an auditor's query is an access like any other): the decision
goes through `services.authorization`, in the transaction that reads the entries, and the filters
that name a referral, a subject or an actor go into the entry, so "who looked at this person's
audit trail" is answerable too.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from referral_service.audit.log import AuditFilter, OpenedEntry, VerifyReport
from referral_service.db.models import User
from referral_service.db.session import read_only_session
from referral_service.domain.access import Action
from referral_service.domain.errors import NotFound, ValidationFailed
from referral_service.domain.model import Actor
from referral_service.services.authorization import authorize
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from referral_service.services.ports import Services


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def entry_view(entry: OpenedEntry) -> dict[str, Any]:
    """An entry as the contract shows it; a row that does not open says so and shows only where it is."""
    record = entry.record or {}
    return {
        "id": entry.id,
        "at": entry.at,
        "index": entry.index,
        "leaf_hash": b64(entry.leaf_hash),
        "actor_id": record.get("actor_id"),
        "role": record.get("role"),
        "partner_id": record.get("partner_id"),
        "action": record.get("action"),
        "referral_id": record.get("referral_id"),
        "subject_id": record.get("subject_id"),
        "outcome": record.get("outcome"),
        "request_id": record.get("request_id"),
        "purpose": record.get("purpose"),
        "details": entry.details,
        "details_erased": entry.details_state == "erased",
        "damaged": entry.record is None or entry.details_state == "damaged",
    }


def _filter_details(where: AuditFilter) -> dict[str, str]:
    out = {}
    if where.actor_id:
        out["actor_id"] = where.actor_id
    if where.action:
        out["action"] = where.action
    if where.since:
        out["since"] = where.since.isoformat()
    if where.until:
        out["until"] = where.until.isoformat()
    return out


def query(
    services: Services, actor: Actor, where: AuditFilter, *, limit: int | None = None, cursor: str | None = None
) -> dict[str, Any]:
    """Entries matching every given filter, newest first, decrypted for the auditor."""
    if where.since and where.until and where.since >= where.until:
        raise ValidationFailed("invalid time range", {"until": ["must be after since"]})
    limit = clamp_limit(limit)
    after = decode_cursor(cursor) if cursor else None
    with services.uow() as uow:
        authorize(
            services,
            actor,
            Action.READ_AUDIT,
            referral_id=where.referral_id,
            subject_id=where.subject_id,
            details=_filter_details(where),
        )
        rows = services.audit.query(uow.session, where, limit=limit + 1, after=after)
        items = [entry_view(services.audit.open_entry(uow.session, row)) for row in rows[:limit]]
        nxt = encode_cursor(rows[limit - 1].at, rows[limit - 1].id) if len(rows) > limit else None
        uow.commit()
    return {"items": items, "next": nxt}


def export_rows(services: Services, actor: Actor, where: AuditFilter, *, cap: int = 50_000) -> list[dict[str, Any]]:
    """Every matching entry (up to `cap`) for a CSV export, audited as one export."""
    with services.uow() as uow:
        authorize(
            services,
            actor,
            Action.EXPORT_AUDIT,
            referral_id=where.referral_id,
            subject_id=where.subject_id,
            details=_filter_details(where),
        )
        out: list[dict[str, Any]] = []
        after: tuple[datetime, str] | None = None
        while len(out) < cap:
            rows = services.audit.query(uow.session, where, limit=min(1000, cap - len(out)), after=after)
            if not rows:
                break
            out.extend(entry_view(services.audit.open_entry(uow.session, row)) for row in rows)
            after = (rows[-1].at, rows[-1].id)
        uow.commit()
    return out


def access_report(
    services: Services, actor: Actor, *, referral_id: str | None = None, subject_id: str | None = None, limit: int = 500
) -> dict[str, Any]:
    """Who accessed a referral's record, or (per subject) what a person would be told on request:
    every allowed or refused access, by whom (name, role, organisation), when, which fields."""
    if not referral_id and not subject_id:
        raise ValidationFailed("name a referral or a subject", {"referral_id": ["required"]})
    where = AuditFilter(referral_id=referral_id, subject_id=subject_id)
    with services.uow() as uow:
        authorize(
            services,
            actor,
            Action.READ_AUDIT,
            referral_id=referral_id,
            subject_id=subject_id,
            details={"report": "access"},
        )
        rows = services.audit.query(uow.session, where, limit=limit)
        opened = [services.audit.open_entry(uow.session, row) for row in rows]
        ids = {e.record.get("actor_id") for e in opened if e.record}
        names: dict[str, str] = {}
        if ids:  # (a Result has keys(), so dict() would take it for a mapping)
            names = {uid: name for uid, name in uow.session.execute(select(User.id, User.name).where(User.id.in_(ids)))}
        uow.commit()
    report = []
    for e in opened:
        rec = e.record or {}
        report.append(
            {
                "at": e.at,
                "index": e.index,
                "actor_id": rec.get("actor_id"),
                "actor_name": names.get(str(rec.get("actor_id"))),
                "role": rec.get("role"),
                "partner_id": rec.get("partner_id"),
                "action": rec.get("action"),
                "outcome": rec.get("outcome"),
                "referral_id": rec.get("referral_id"),
                "fields": (e.details or {}).get("fields", []),
                "details_erased": e.details_state == "erased",
                "damaged": e.record is None or e.details_state == "damaged",
            }
        )
    return {"referral_id": referral_id, "subject_id": subject_id, "items": report}


def verify(
    services: Services, actor: Actor | None = None, *, earlier: str | None = None, nodes: bool = False
) -> VerifyReport:
    """The whole log recomputed (`AuditLog.verify`); `actor` None is the operator's CLI."""
    with services.uow() as uow:
        if actor is not None:
            authorize(services, actor, Action.VERIFY_AUDIT)
        else:
            services.access.record(actor=None, action="audit.verify", referral_id=None)
        uow.commit()
    # Seconds of reading for a large log: in a snapshot of its own that holds no write lock.
    with read_only_session(services.engine) as session:
        return services.audit.verify(session, earlier=earlier, nodes=nodes)


def checkpoint(services: Services, actor: Actor | None = None) -> str:
    with services.uow() as uow:
        if actor is not None:
            authorize(services, actor, Action.VERIFY_AUDIT)
        note = services.audit.latest_checkpoint(uow.session)
        uow.commit()
    return note


def inclusion_proof(services: Services, actor: Actor, index: int, size: int) -> dict[str, Any]:
    with services.uow() as uow:
        authorize(services, actor, Action.VERIFY_AUDIT)
        try:
            leaf, proof = services.audit.inclusion_proof(uow.session, index, size)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        uow.commit()
    return {"index": index, "size": size, "leaf_hash": b64(leaf), "hashes": [b64(h) for h in proof]}


def consistency_proof(services: Services, actor: Actor, first: int, second: int) -> dict[str, Any]:
    with services.uow() as uow:
        authorize(services, actor, Action.VERIFY_AUDIT)
        try:
            proof = services.audit.consistency_proof(uow.session, first, second)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        uow.commit()
    return {"first": first, "second": second, "hashes": [b64(h) for h in proof]}


def integrate_once(services: Services, *, batch: int = 5000, wait: bool = False) -> int:
    """One integrator step in its own transaction; returns the number of entries sequenced (0 also when
    another integrator holds the step and `wait` is not set)."""
    with services.uow() as uow:
        done = services.audit.integrate(uow.session, batch=batch, wait=wait)
        uow.commit()
    return done


def integrate_all(services: Services, *, batch: int = 5000) -> int:
    """Sequence everything committed so far, waiting for any integrator that is mid-step."""
    total = 0
    while n := integrate_once(services, batch=batch, wait=True):
        total += n
    return total
