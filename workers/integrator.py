"""The audit log's integrator: sequences new entries into the Merkle tree and signs checkpoints.

Any number may run (one per host, say); each step locks the tree's head row, and the others skip
that step, so there is one winner per step and never two inconsistent checkpoints.
"""

from __future__ import annotations

import logging
import threading

from referral_service.bootstrap import Services
from referral_service.services.audit import integrate_once

log = logging.getLogger(__name__)


def run_integrator(services: Services, stop: threading.Event, interval: float | None = None) -> None:
    every = services.settings.audit_integrate_every if interval is None else interval
    while not stop.is_set():
        try:
            while integrate_once(services) and not stop.is_set():
                pass
        except Exception as exc:  # noqa: BLE001 - a database blip: the entries wait for the next tick
            log.warning("integrator: step failed (%s)", type(exc).__name__)
        stop.wait(every)
