"""What was sent to each partner's system, and replaying one delivery (admins)."""

from __future__ import annotations

from typing import Any

from referral_service.api import bp, current_actor, query_choice, query_int, requires, services
from referral_service.api.openapi import PAGE, choice, operation
from referral_service.domain.access import Action
from referral_service.services import notifications
from schemas.deliveries import DELIVERY_STATUSES, DeliveryPageSchema, DeliverySchema

_ADMINS = {403: "only admins see deliveries to partners", 404: "no such partner"}


@bp.get("/partners/<partner_id>/deliveries")
@operation(
    "A partner's most recent webhook and e-mail deliveries, newest first (admins)",
    response=DeliveryPageSchema,
    parameters=(
        choice("status", DELIVERY_STATUSES, "only deliveries in this status"),
        PAGE[0],  # limit (the most recent only: no cursor)
    ),
    errors=_ADMINS,
)
@requires(Action.READ_DELIVERIES)
def list_deliveries(partner_id: str) -> Any:
    return notifications.list_deliveries(
        services(),
        current_actor(),
        partner_id,
        status=query_choice("status", DELIVERY_STATUSES),
        limit=query_int("limit"),
    )


@bp.post("/partners/<partner_id>/deliveries/<delivery_id>/replay")
@operation(
    "Send one delivery again now, with the same webhook-id (admins)",
    response=DeliverySchema,
    errors={403: "only admins replay deliveries to partners", 404: "no such delivery"},
)
@requires(Action.REPLAY_DELIVERY)
def replay_delivery(partner_id: str, delivery_id: str) -> Any:
    return notifications.replay_delivery(services(), current_actor(), partner_id, delivery_id)
