"""Broker connections and the publisher the outbox relay uses."""

from __future__ import annotations

import json
from typing import Any, Protocol

from kombu import Connection, Exchange, Producer

# Bounded: a relay that cannot publish must give up, roll back and try the rows again later,
# never hang holding its claim on the outbox rows.
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}
CONFIRM_TIMEOUT = 5.0


def connect(broker_url: str) -> Connection:
    if broker_url.startswith("memory"):
        # The in-process transport polls; its 1 s default would dominate submit-to-offer latency.
        return Connection("memory://localhost//", transport_options={"polling_interval": 0.005})
    return Connection(
        broker_url,
        transport_options={"confirm_publish": True},
        connect_timeout=5,
        heartbeat=30,
    )


class Publisher(Protocol):
    def publish(self, exchange: Exchange, routing_key: str, body: dict[str, Any], *, message_id: str) -> None: ...


class KombuPublisher:
    """Publishes persistent JSON messages; with confirms on, `publish` returns once the broker has them."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self.connection.default_channel)
        return self._producer

    def publish(self, exchange: Exchange, routing_key: str, body: dict[str, Any], *, message_id: str) -> None:
        self.producer.publish(
            json.dumps(body),
            exchange=exchange,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=message_id,
            retry=True,
            retry_policy=RETRY_POLICY,
            confirm_timeout=CONFIRM_TIMEOUT,
            declare=[exchange],
        )

    def reset(self) -> None:
        self._producer = None
