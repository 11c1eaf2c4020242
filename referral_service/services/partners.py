"""The partner directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from referral_service.db.models import Partner
from referral_service.domain.errors import Forbidden, NotFound
from referral_service.domain.model import Actor, Role

if TYPE_CHECKING:
    from referral_service.bootstrap import Services

FIELDS = ("name", "networks", "services", "provinces", "districts", "languages", "capacity", "accepts_minors",
          "staff_sex", "active")


def partner_view(p: Partner) -> dict[str, Any]:
    return {"id": p.id, **{f: getattr(p, f) for f in FIELDS}}


def upsert_partners(
    services: Services, partners: list[dict[str, Any]], actor: Actor | None = None
) -> list[dict[str, Any]]:
    """Create or update partners by id (already validated by `schemas.PartnerSchema`)."""
    if actor is not None and actor.role != Role.ADMIN:
        raise Forbidden("only admins change the partner directory")
    with services.uow() as uow:
        out = []
        for data in partners:
            row = uow.session.get(Partner, data["id"])
            if row is None:
                row = Partner(id=data["id"])
                uow.session.add(row)
            for f in FIELDS:
                if f in data:
                    setattr(row, f, data[f])
            out.append(row)
        uow.commit()
        return [partner_view(p) for p in out]


def list_partners(services: Services) -> list[dict[str, Any]]:
    with services.uow() as uow:
        return [partner_view(p) for p in uow.session.scalars(select(Partner).order_by(Partner.name))]


def get_partner(services: Services, partner_id: str) -> dict[str, Any]:
    with services.uow() as uow:
        p = uow.session.get(Partner, partner_id)
        if p is None:
            raise NotFound("no such partner")
        return partner_view(p)


def active_partner_ids(services: Services) -> list[str]:
    with services.uow() as uow:
        return list(uow.session.scalars(select(Partner.id).where(Partner.active.is_(True))))
