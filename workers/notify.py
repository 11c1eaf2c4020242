"""The notify worker: sends the notification rows (webhooks, e-mail) that partner notices wrote in their
own transactions, with retries, and deletes old ones (`services.notifications`)."""

from __future__ import annotations

import logging
import threading
import time

from referral_service.bootstrap import Services
from referral_service.services.notifications import Sender, deliver_due, next_due, prune

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0


def run_delivery(services: Services, stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    """Send what is due, again and again, until `stop`; a failing round is retried a poll later."""
    sender = Sender(services)  # keeps each endpoint's connection alive from round to round
    try:
        _loop(services, stop, poll, sender)
    finally:
        sender.close()


def _loop(services: Services, stop: threading.Event, poll: float, sender: Sender) -> None:
    pruned_at = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - pruned_at >= PRUNE_EVERY_SECONDS:
                pruned_at = time.monotonic()
                if gone := prune(services):
                    log.info("notify: pruned %d old notification rows", gone)
            sent = deliver_due(services, sender=sender)
            if sent.more:
                continue  # a full round: more is due already
            upcoming = next_due(services)
        except Exception as exc:  # noqa: BLE001 - database blip: try again next poll
            log.warning("notify: delivery round failed (%s)", type(exc).__name__)
            upcoming = None
        wait = poll
        if upcoming is not None:
            wait = max(0.05, min(poll, (upcoming - services.clock.now()).total_seconds()))
        stop.wait(wait)
