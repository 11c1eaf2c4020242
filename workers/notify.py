"""The notify worker: turns partner events into notifications (consumer group `notify`) and sends
them (webhooks, e-mail) with retries, from the `notifications` table."""

from __future__ import annotations

import logging
import threading

from kombu import Connection

from referral_service.bootstrap import Services
from referral_service.services.notifications import deliver_due, next_due
from workers.consumer import IdempotentConsumer
from workers.handlers import CONSUMER_GROUPS

log = logging.getLogger(__name__)
GROUP = "notify"
POLL_SECONDS = 1.0


def make_notify_consumer(connection: Connection, services: Services) -> IdempotentConsumer:
    return IdempotentConsumer(connection, services, GROUP, CONSUMER_GROUPS[GROUP])


def run_delivery(services: Services, stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    """Send what is due, again and again, until `stop`; a failing round is retried a poll later."""
    while not stop.is_set():
        try:
            sent = deliver_due(services)
            if sum(sent.values()):
                continue  # there may be more due already
            upcoming = next_due(services)
        except Exception as exc:  # noqa: BLE001 - database blip: try again next poll
            log.warning("notify: delivery round failed (%s)", type(exc).__name__)
            upcoming = None
        wait = poll
        if upcoming is not None:
            wait = max(0.05, min(poll, (upcoming - services.clock.now()).total_seconds()))
        stop.wait(wait)
