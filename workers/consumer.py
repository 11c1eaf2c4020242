"""An idempotent kombu consumer: handler writes and the processed-message row commit together,
then the message is acked. Failures are retried a bounded number of times, then dead-lettered
with the reason; nothing is acked silently.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kombu import Connection, Message, Producer
from kombu.mixins import ConsumerMixin
from sqlalchemy.exc import IntegrityError

from referral_service.bootstrap import Services
from referral_service.db.models import ProcessedMessage
from referral_service.db.session import UnitOfWork
from referral_service.messaging.topology import DEAD, DEAD_ROUTING_KEY, consumer_queue, dead_letter_queue

log = logging.getLogger(__name__)
Handler = Callable[[UnitOfWork, Services, dict[str, Any]], Any]
MAX_ATTEMPTS = 5


class PoisonMessage(Exception):
    """The message can never be handled (malformed); dead-letter it at once."""


class IdempotentConsumer(ConsumerMixin):
    def __init__(self, connection: Connection, services: Services, group: str,
                 handlers: Mapping[str, Handler], *, prefetch: int = 20, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.connection = connection
        self.services = services
        self.group = group
        self.handlers = handlers
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.queue = consumer_queue(connection, group)
        self.handled = 0

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 - kombu's signature
        dead_letter_queue(self.connection)(channel).declare()
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"],
                         prefetch_count=self.prefetch)]

    def on_message(self, body: Any, message: Message) -> None:
        try:
            event = body if isinstance(body, dict) else json.loads(body)
            event_id, kind = str(event["event_id"]), str(event["type"])
            handler = self.handlers.get(kind)
            if handler is None:
                raise PoisonMessage(f"no handler for {kind}")
        except (ValueError, KeyError, TypeError, PoisonMessage) as exc:
            self._dead_letter(message, body, f"malformed: {type(exc).__name__}")
            return
        try:
            self._handle(event_id, event, handler)
        except Exception as exc:  # noqa: BLE001 - any failure: retry a bounded number of times
            self._retry_or_dead_letter(message, body, exc)
            return
        message.ack()
        self.handled += 1

    def _handle(self, event_id: str, event: dict[str, Any], handler: Handler) -> None:
        with self.services.uow() as uow:
            if uow.session.get(ProcessedMessage, (self.group, event_id)) is not None:
                return  # redelivered after a crash between commit and ack: already done
            handler(uow, self.services, event)
            uow.session.add(ProcessedMessage(consumer=self.group, event_id=event_id,
                                             processed_at=self.services.clock.now()))
            try:
                uow.commit()
            except IntegrityError:
                uow.rollback()  # a competing consumer committed the same event first
                with self.services.uow() as check:
                    if check.session.get(ProcessedMessage, (self.group, event_id)) is None:
                        raise

    def _producer(self) -> Producer:
        return Producer(self.connection.default_channel)

    def _retry_or_dead_letter(self, message: Message, body: Any, exc: Exception) -> None:
        attempts = int((message.headers or {}).get("x-attempts", 0)) + 1
        reason = f"{type(exc).__name__}"  # the class only: exception text may quote data
        if attempts >= self.max_attempts:
            self._dead_letter(message, body, f"failed {attempts} times: {reason}")
            return
        log.warning("%s: handler failed (%s), attempt %d of %d", self.group, reason, attempts, self.max_attempts)
        time.sleep(min(0.05 * 2**attempts, 2.0))
        self._producer().publish(body, exchange="", routing_key=self.queue.name, serializer="json",
                                 headers={"x-attempts": attempts}, delivery_mode=2, retry=True)
        message.ack()

    def _dead_letter(self, message: Message, body: Any, reason: str) -> None:
        log.error("%s: dead-lettering a message: %s", self.group, reason)
        self._producer().publish(body if isinstance(body, dict | list) else str(body), exchange=DEAD,
                                 routing_key=DEAD_ROUTING_KEY, serializer="json", delivery_mode=2,
                                 headers={"x-dead-reason": reason, "x-consumer": self.group}, retry=True)
        message.ack()
