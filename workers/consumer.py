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
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from referral_service.bootstrap import Services
from referral_service.db.models import ProcessedMessage
from referral_service.db.session import UnitOfWork
from referral_service.domain.events import EVENT_TYPES, Event
from referral_service.messaging.broker import CONFIRM_TIMEOUT, RETRY_POLICY
from referral_service.messaging.names import (
    ATTEMPTS_HEADER,
    CONSUMER_HEADER,
    DEAD_REASON_HEADER,
    DEAD_ROUTING_KEY,
    ORIGINAL_ROUTING_KEY_HEADER,
)
from referral_service.messaging.topology import DEAD, consumer_queue, dead_letter_queue

log = logging.getLogger(__name__)
Handler = Callable[[UnitOfWork, Services, dict[str, Any]], Any]
HandlerMap = Mapping[type[Event], Handler]
MAX_ATTEMPTS = 5
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


class PoisonMessage(Exception):
    """The message can never be handled (malformed, or about something that does not exist):
    dead-letter it at once. Handlers raise it too; its text becomes the x-dead-reason header,
    so it must name no personal data."""


def find_handler(handlers: HandlerMap, kind: str) -> Handler | None:
    """The handler of the event class whose routing key is `kind`, if this group handles it."""
    event_type = EVENT_TYPES.get(kind)
    return handlers.get(event_type) if event_type is not None else None


class IdempotentConsumer(ConsumerMixin):
    def __init__(
        self,
        connection: Connection,
        services: Services,
        group: str,
        handlers: HandlerMap,
        *,
        prefetch: int = 20,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.connection = connection
        self.services = services
        self.group = group
        self.handlers = handlers
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        # Bound to the handled events' keys: the map is the one list of what this group consumes.
        self.queue = consumer_queue(connection, group, handlers)
        self.handled = 0

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 - kombu's signature
        dead_letter_queue(self.connection)(channel).declare()
        return [
            Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"], prefetch_count=self.prefetch)
        ]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        # kombu's default logs the raw body (it may hold anything) and acks it, losing it: park it instead.
        self._dead_letter(message, f"undecodable: {type(exc).__name__}")

    def on_message(self, body: Any, message: Message) -> None:
        try:
            event = body if isinstance(body, dict) else json.loads(body)
            event_id, kind = str(event["event_id"]), str(event["type"])
            handler = find_handler(self.handlers, kind)
            if handler is None:
                raise PoisonMessage(f"no handler for {kind}")
        except (ValueError, KeyError, TypeError, AttributeError, PoisonMessage) as exc:
            self._dead_letter(message, f"malformed: {type(exc).__name__}")
            return
        try:
            self._handle(event_id, event, handler)
        except PoisonMessage as exc:
            self._dead_letter(message, f"rejected: {exc}")
            return
        except TRANSIENT_ERRORS as exc:
            # The database is down or restarting: not the message's fault, so it must not count
            # towards dead-lettering. Back off and let the broker deliver it again.
            log.warning("%s: database unavailable (%s); message requeued", self.group, type(exc).__name__)
            time.sleep(1.0)
            message.requeue()
            return
        except Exception as exc:  # noqa: BLE001 - any other failure: retry a bounded number of times
            self._retry_or_dead_letter(message, exc)
            return
        message.ack()
        self.handled += 1

    def _handle(self, event_id: str, event: dict[str, Any], handler: Handler) -> None:
        with self.services.uow() as uow:
            if uow.session.get(ProcessedMessage, (self.group, event_id)) is not None:
                return  # redelivered after a crash between commit and ack: already done
            handler(uow, self.services, event)
            uow.session.add(
                ProcessedMessage(consumer=self.group, event_id=event_id, processed_at=self.services.clock.now())
            )
            try:
                uow.commit()
            except IntegrityError:
                uow.rollback()  # a competing consumer committed the same event first
                with self.services.uow() as check:
                    if check.session.get(ProcessedMessage, (self.group, event_id)) is None:
                        raise

    def _republish(self, message: Message, *, exchange: Any, routing_key: str, headers: dict[str, Any]) -> None:
        """Publish the message's original bytes again, confirmed, before the caller acks it.

        If this raises, the message is not acked: the broker keeps it and delivers it again.
        """
        original = dict(message.headers or {})
        # A retried message comes back through the default exchange: keep the key it first had.
        original.setdefault(ORIGINAL_ROUTING_KEY_HEADER, (message.delivery_info or {}).get("routing_key", ""))
        producer = Producer(self.connection.default_channel)
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            headers={**original, **headers},
            delivery_mode=2,
            message_id=(message.properties or {}).get("message_id"),
            retry=True,
            retry_policy=RETRY_POLICY,
            confirm_timeout=CONFIRM_TIMEOUT,
        )

    def _retry_or_dead_letter(self, message: Message, exc: Exception) -> None:
        attempts = int((message.headers or {}).get(ATTEMPTS_HEADER, 0)) + 1
        reason = f"{type(exc).__name__}"  # the class only: exception text may quote data
        if attempts >= self.max_attempts:
            self._dead_letter(message, f"failed {attempts} times: {reason}")
            return
        log.warning("%s: handler failed (%s), attempt %d of %d", self.group, reason, attempts, self.max_attempts)
        time.sleep(min(0.05 * 2**attempts, 2.0))
        self._republish(message, exchange="", routing_key=self.queue.name, headers={ATTEMPTS_HEADER: attempts})
        message.ack()

    def _dead_letter(self, message: Message, reason: str) -> None:
        log.error("%s: dead-lettering a message: %s", self.group, reason)
        self._republish(
            message,
            exchange=DEAD,
            routing_key=DEAD_ROUTING_KEY,
            headers={DEAD_REASON_HEADER: reason, CONSUMER_HEADER: self.group},
        )
        message.ack()
