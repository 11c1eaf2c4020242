"""The deadline scheduler: any number may run; each due row fires once (row locks)."""

from __future__ import annotations

import logging
import threading

from referral_service.bootstrap import Services
from referral_service.services.deadlines import fire_due_deadlines

log = logging.getLogger(__name__)


def run_scheduler(services: Services, stop: threading.Event, interval: float = 5.0) -> None:
    while not stop.is_set():
        try:
            while fire_due_deadlines(services) and not stop.is_set():
                pass
        except Exception as exc:  # noqa: BLE001 - database blip: try again next tick
            log.warning("deadlines: tick failed (%s)", type(exc).__name__)
        stop.wait(interval)
