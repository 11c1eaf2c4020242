"""Drive the real relay and router in-process over kombu's memory:// transport, step by step."""

from __future__ import annotations

from kombu import Consumer

from referral_service.bootstrap import Services
from referral_service.messaging.broker import KombuPublisher, connect
from workers.handlers import declare_broker
from workers.relay import OutboxRelay
from workers.router import make_router


class InProcessPipeline:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.connection = connect("memory://")
        declare_broker(self.connection)
        self.relay = OutboxRelay(services, KombuPublisher(self.connection))
        self.router = make_router(self.connection, services)
        # Partner notifications (webhooks, e-mail) are rows written with the offers; sending them is
        # `notifications.deliver_due`.
        self.consumers = [self.router]
        for consumer in self.consumers:  # memory:// queues live as long as the process: start empty
            consumer.queue(self.connection.default_channel).purge()

    def _consume(self) -> int:
        before = sum(c.handled for c in self.consumers)
        for consumer in self.consumers:
            with Consumer(self.connection, queues=[consumer.queue], callbacks=[consumer.on_message], accept=["json"]):
                while True:
                    try:
                        self.connection.drain_events(timeout=0.02)
                    except TimeoutError:
                        break
        return sum(c.handled for c in self.consumers) - before

    def drain(self, rounds: int = 50) -> None:
        """Publish and route until nothing is left to do."""
        for _ in range(rounds):
            published = self.relay.publish_batch()
            consumed = self._consume()
            if not published and not consumed:
                return
        raise AssertionError("pipeline did not settle")

    def close(self) -> None:
        self.connection.release()


def drain(services: Services) -> None:
    """Run the relay and router until every committed event has been handled."""
    pipeline = InProcessPipeline(services)
    try:
        pipeline.drain()
    finally:
        pipeline.close()
