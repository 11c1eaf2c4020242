"""The router: routes each consented referral to partners, and onward on decline or expiry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kombu import Connection

from referral_service.bootstrap import Services
from referral_service.db.session import UnitOfWork
from referral_service.services.assignments import prepare_routing
from workers.consumer import IdempotentConsumer
from workers.handlers import CONSUMER_GROUPS

GROUP = "router"
#: Deliveries routed per transaction at most (those that have already arrived; see `IdempotentConsumer`).
BATCH = 20
#: Seconds a batch waits for more deliveries after its first (see `IdempotentConsumer`): 20 ms of
#: latency at most, against a p99 goal of 250 ms, for several referrals per transaction at 50–100/s.
LINGER = 0.02


def prepare_routes(uow: UnitOfWork, _services: Services, batch: Sequence[dict[str, Any]]) -> None:
    """Before a batch of routing events: lock their referrals and read their subjects all at once
    (an event without a referral id is the handler's to reject)."""
    prepare_routing(uow, [rid for event in batch if isinstance(rid := event.get("referral_id"), str) and rid])


def make_router(
    connection: Connection, services: Services, *, batch: int = BATCH, linger: float = LINGER
) -> IdempotentConsumer:
    return IdempotentConsumer(
        connection,
        services,
        GROUP,
        CONSUMER_GROUPS[GROUP],
        prefetch=max(20, batch),
        batch=batch,
        before_batch=prepare_routes,
        linger=linger,
    )
