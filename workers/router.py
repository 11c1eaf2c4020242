"""The router: routes each consented referral to partners, and onward on decline or expiry."""

from __future__ import annotations

from kombu import Connection

from referral_service.bootstrap import Services
from workers.consumer import IdempotentConsumer
from workers.handlers import CONSUMER_GROUPS

GROUP = "router"


def make_router(connection: Connection, services: Services) -> IdempotentConsumer:
    return IdempotentConsumer(connection, services, GROUP, CONSUMER_GROUPS[GROUP])
