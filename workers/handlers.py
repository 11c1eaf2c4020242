"""Every consumer group, the event classes it handles, and the handler of each: the one map.

A group's queue is bound to the routing keys of exactly these classes (`messaging.topology.consumer_queue`)
and its consumer dispatches on them, so a handler cannot exist without its binding, nor a binding
without its handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kombu import Connection, Queue

from referral_service.bootstrap import Services
from referral_service.db.session import UnitOfWork
from referral_service.domain import events
from referral_service.domain.errors import NotFound
from referral_service.messaging import topology
from referral_service.services.assignments import route_open_needs
from workers.consumer import Handler, PoisonMessage


def route_referral(uow: UnitOfWork, services: Services, event: dict[str, Any]) -> None:
    """Offer the referral's open needs to partners (again): after intake, re-opening, a decline, expiry or close."""
    referral_id = event.get("referral_id")
    if not isinstance(referral_id, str) or not referral_id:
        raise PoisonMessage("no referral_id")
    try:
        route_open_needs(uow, services, referral_id)
    except NotFound:
        # The outbox commits an event with its referral, so this is another database's event
        # or a forged one: park it where an operator will see it instead of dropping it.
        raise PoisonMessage("unknown referral") from None


CONSUMER_GROUPS: Mapping[str, Mapping[type[events.Event], Handler]] = {
    # The router routes each consented referral, and routes it onward on decline and expiry, and once a
    # served need closes: a need that found no partner then leaves the referral unroutable (where
    # supervisors look), or is offered to a partner that has joined since.
    "router": {
        events.ReferralSubmitted: route_referral,
        events.ReferralReopened: route_referral,
        events.AssignmentDeclined: route_referral,
        events.AssignmentExpired: route_referral,
        events.AssignmentClosed: route_referral,
    },
}


def routing_keys(group: str) -> list[str]:
    return sorted(cls.routing_key for cls in CONSUMER_GROUPS[group])


def group_queue(connection: Connection, group: str) -> Queue:
    return topology.consumer_queue(connection, group, CONSUMER_GROUPS[group])


def declare_broker(connection: Connection, partner_ids: Iterable[str] = ()) -> None:
    """Every exchange and queue, the consumer groups' queues bound as the map above says."""
    topology.declare_topology(connection, CONSUMER_GROUPS, partner_ids)
