"""The deadline scheduler: any number may run; each due row fires once (row locks)."""

from __future__ import annotations

import logging
import threading

from referral_service.bootstrap import Services
from referral_service.db.planner import PlannerStatistics
from referral_service.services.deadlines import fire_due_deadlines

log = logging.getLogger(__name__)


def run_scheduler(services: Services, stop: threading.Event, interval: float = 5.0) -> None:
    # On SQLite the reports' indexes are used only with planner statistics (PostgreSQL's autovacuum keeps
    # its own): refreshed as the database grows.
    statistics = PlannerStatistics(services.engine)
    while not stop.is_set():
        try:
            while fire_due_deadlines(services) and not stop.is_set():
                pass
            statistics.tick()
        except Exception as exc:  # noqa: BLE001 - database blip: try again next tick
            log.warning("deadlines: tick failed (%s)", type(exc).__name__)
        stop.wait(interval)
