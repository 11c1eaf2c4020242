"""Starting and stopping the workers, in threads of one process (`run`, `worker all`) or alone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kombu import Connection

from referral_service.bootstrap import Services
from referral_service.messaging.broker import KombuPublisher, connect
from referral_service.services.partners import active_partner_ids
from workers.deadlines import run_scheduler
from workers.handlers import declare_broker
from workers.integrator import run_integrator
from workers.notify import run_delivery
from workers.relay import OutboxRelay
from workers.router import make_router

log = logging.getLogger(__name__)
WORKERS = ("relay", "router", "deadlines", "integrator", "notify")


@dataclass
class Runtime:
    services: Services
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    _stoppers: list[Callable[[], None]] = field(default_factory=list)

    def _connection(self) -> Connection:
        conn = connect(self.services.settings.broker_url)
        self.connections.append(conn)
        return conn

    def declare(self) -> None:
        conn = self._connection()
        conn.ensure_connection(max_retries=3)
        declare_broker(conn, active_partner_ids(self.services))

    def start(self, names: tuple[str, ...] = WORKERS) -> None:
        self.declare()
        for name in names:
            target = getattr(self, f"_{name}")
            thread = threading.Thread(target=target, name=f"worker-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _relay(self) -> None:
        relay = OutboxRelay(self.services, KombuPublisher(self._connection()))
        if not self.services.settings.broker_is_durable:
            relay.replay_unconsumed()
        relay.run(self.stop)

    def _router(self) -> None:
        router = make_router(self._connection(), self.services)
        self._stoppers.append(lambda: setattr(router, "should_stop", True))
        router.run()

    def _notify(self) -> None:
        run_delivery(self.services, self.stop)

    def _deadlines(self) -> None:
        run_scheduler(self.services, self.stop)

    def _integrator(self) -> None:
        run_integrator(self.services, self.stop)

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.services.outbox_signal.set()
        for stopper in self._stoppers:
            stopper()
        for thread in self.threads:
            thread.join(timeout)
        for conn in self.connections:
            conn.release()

    def wait(self) -> None:
        while not self.stop.is_set() and any(t.is_alive() for t in self.threads):
            self.stop.wait(0.5)
