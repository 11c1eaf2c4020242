"""The partner directory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from referral_service.db.models import Partner
from referral_service.domain.access import Action
from referral_service.domain.errors import NotFound
from referral_service.domain.model import PARTNER_FIELDS, Actor
from referral_service.services.authorization import authorize
from referral_service.services.common import clamp_limit, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from referral_service.services.ports import Services


class ImportRecord(Protocol):
    label: str
    partner: dict[str, Any] | None
    reason: str | None
    keep_on_update: tuple[str, ...]


def partner_view(p: Partner) -> dict[str, Any]:
    return {"id": p.id, **{f: getattr(p, f) for f in PARTNER_FIELDS}}


def upsert_partners(
    services: Services, partners: list[dict[str, Any]], actor: Actor | None = None
) -> list[dict[str, Any]]:
    """Create or update partners by id (already validated by `schemas.PartnerSchema`). Without an
    actor it is the operator at the command line (import, demo)."""
    if actor is not None:
        authorize(services, actor, Action.WRITE_PARTNERS)
    with services.uow() as uow:
        out = []
        for data in partners:
            row = uow.session.get(Partner, data["id"])
            if row is None:
                row = Partner(id=data["id"])
                uow.session.add(row)
            for f in PARTNER_FIELDS:
                if f in data:
                    setattr(row, f, data[f])
            out.append(row)
        if actor is None:  # the operator's import at the command line is on record too
            services.access.record(
                actor=None, action="partner.import", referral_id=None, details={"partners": str(len(out))}
            )
        uow.commit()
        return [partner_view(p) for p in out]


@dataclass
class ImportLine:
    """What importing one record did (or, in a dry run, would do)."""

    outcome: str  # new | updated | unchanged | skipped
    label: str
    partner_id: str | None = None
    changed: tuple[str, ...] = ()
    reason: str | None = None


def import_partners(services: Services, records: Sequence[ImportRecord], *, dry_run: bool = False) -> list[ImportLine]:
    """Create or update partners in one transaction (all or nothing); a dry run rolls it back.

    Each record is a validated partner object, or the reason it was skipped. Partners not in the
    file are left as they are, and nothing here touches assignments: re-importing never drops an
    open case. Fields in `keep_on_update` are set on a new partner only (HSDS cannot say them).
    """
    lines: list[ImportLine] = []
    seen: set[str] = set()
    with services.uow() as uow:
        for record in records:
            if record.partner is None:
                lines.append(ImportLine("skipped", record.label, reason=record.reason))
                continue
            data = record.partner
            if data["id"] in seen:
                lines.append(ImportLine("skipped", record.label, data["id"], reason="the same id twice in the file"))
                continue
            seen.add(data["id"])
            row = uow.session.get(Partner, data["id"])
            if row is None:
                row = Partner(id=data["id"])
                uow.session.add(row)
                for f in PARTNER_FIELDS:
                    if f in data:
                        setattr(row, f, data[f])
                lines.append(ImportLine("new", record.label, data["id"]))
                continue
            changed = tuple(
                f for f in PARTNER_FIELDS if f in data and f not in record.keep_on_update and getattr(row, f) != data[f]
            )
            for f in changed:
                setattr(row, f, data[f])
            lines.append(ImportLine("updated" if changed else "unchanged", record.label, data["id"], changed))
        if not dry_run:  # the operator's import at the command line is on record, as `upsert_partners`'s is
            services.access.record(
                actor=None, action="partner.import", referral_id=None, details={"partners": str(len(seen))}
            )
            uow.commit()
    return lines


def list_partners(
    services: Services, actor: Actor, *, limit: int | None = None, cursor: str | None = None
) -> dict[str, Any]:
    """The directory in id order, a page at a time (`next` is the last id seen, opaque to clients)."""
    authorize(services, actor, Action.READ_PARTNERS)
    limit = clamp_limit(limit)
    query = select(Partner).order_by(Partner.id)
    if cursor:
        query = query.where(Partner.id > decode_cursor(cursor)[1])
    with services.uow() as uow:
        rows = uow.session.scalars(query.limit(limit + 1)).all()
        items = [partner_view(p) for p in rows[:limit]]
        nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return {"items": items, "next": nxt}


def get_partner(services: Services, partner_id: str, actor: Actor) -> dict[str, Any]:
    authorize(services, actor, Action.READ_PARTNERS)
    with services.uow() as uow:
        p = uow.session.get(Partner, partner_id)
        if p is None:
            raise NotFound("no such partner")
        return partner_view(p)


def active_partner_ids(services: Services) -> list[str]:
    with services.uow() as uow:
        return list(uow.session.scalars(select(Partner.id).where(Partner.active.is_(True))))


def partner_names(services: Services) -> dict[str, str]:
    with services.uow() as uow:
        return {pid: name for pid, name in uow.session.execute(select(Partner.id, Partner.name))}
