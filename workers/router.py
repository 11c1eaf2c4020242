"""The router: routes each consented referral to partners, and onward on decline or expiry."""

from __future__ import annotations

from typing import Any

from kombu import Connection

from referral_service.bootstrap import Services
from referral_service.db.session import UnitOfWork
from referral_service.domain.errors import NotFound
from referral_service.services.assignments import route_open_needs
from workers.consumer import IdempotentConsumer, PoisonMessage


def _route(uow: UnitOfWork, services: Services, event: dict[str, Any]) -> None:
    referral_id = event.get("referral_id")
    if not isinstance(referral_id, str) or not referral_id:
        raise PoisonMessage("no referral_id")
    try:
        route_open_needs(uow, services, referral_id)
    except NotFound:
        # The outbox commits an event with its referral, so this is another database's event
        # or a forged one: park it where an operator will see it instead of dropping it.
        raise PoisonMessage("unknown referral") from None


HANDLERS = {
    "referral.submitted": _route,
    "referral.reopened": _route,
    "assignment.declined": _route,
    "assignment.expired": _route,
}


def make_router(connection: Connection, services: Services) -> IdempotentConsumer:
    return IdempotentConsumer(connection, services, "router", HANDLERS)
