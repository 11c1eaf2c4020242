"""The router: routes each consented referral to partners, and onward on decline or expiry."""

from __future__ import annotations

from typing import Any

from kombu import Connection

from referral_service.bootstrap import Services
from referral_service.db.session import UnitOfWork
from referral_service.services.assignments import route_open_needs
from workers.consumer import IdempotentConsumer


def _route(uow: UnitOfWork, services: Services, event: dict[str, Any]) -> None:
    route_open_needs(uow, services, str(event["referral_id"]))


HANDLERS = {
    "referral.submitted": _route,
    "referral.reopened": _route,
    "assignment.declined": _route,
    "assignment.expired": _route,
}


def make_router(connection: Connection, services: Services) -> IdempotentConsumer:
    return IdempotentConsumer(connection, services, "router", HANDLERS)
