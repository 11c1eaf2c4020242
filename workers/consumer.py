"""An idempotent kombu consumer: handler writes and the processed-message row commit together,
then the message is acked. Failures are retried a bounded number of times, then dead-lettered
with the reason; nothing is acked silently.

With `batch` > 1 the consume loop gathers the deliveries that have already arrived, or arrive
within `linger` of the first (up to `batch`), and handles them in one transaction: one
processed-message lookup, one insert for all of them, one commit, then one ack for all. If
anything in the batch fails, the whole transaction is rolled back and each message is handled
again alone, so a poison message still fails (and is dead-lettered) alone, and the others are not
held back by it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kombu import Connection, Message, Producer
from kombu.mixins import ConsumerMixin
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from referral_service.bootstrap import Services
from referral_service.db.models import ProcessedMessage
from referral_service.db.persist import insert_at_commit
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
#: Runs once per batch, before its handlers, with every event of the batch: to read (and lock) what
#: they all need in a few statements instead of a few per message.
BatchHook = Callable[[UnitOfWork, Services, Sequence[dict[str, Any]]], Any]
MAX_ATTEMPTS = 5
#: How long a batch may wait, from its first delivery, for more to join it: a few milliseconds of
#: latency buy one transaction for several messages at moderate rates (at high rates the prefetch
#: fills the batch at once; alone, a message waits this long at most).
DEFAULT_LINGER = 0.0
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


class PoisonMessage(Exception):
    """The message can never be handled (malformed, or about something that does not exist):
    dead-letter it at once. Handlers raise it too; its text becomes the x-dead-reason header,
    so it must name no personal data."""


#: Whether this consumer group has handled the event already: built once (every message asks).
_DONE = select(ProcessedMessage.event_id).where(
    ProcessedMessage.consumer == bindparam("consumer"), ProcessedMessage.event_id == bindparam("event_id")
)


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
        batch: int = 1,
        before_batch: BatchHook | None = None,
        linger: float = DEFAULT_LINGER,
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
        self.batch = max(1, min(batch, prefetch))
        self.before_batch = before_batch
        self.linger = linger
        self.batches = 0  # transactions that handled more than one message (for tests and metrics)
        self.fallbacks = 0  # batches rolled back and handled message by message
        self._gathering = False
        self._pending: list[tuple[Message, str, dict[str, Any], Handler]] = []

    def consume(
        self, limit: int | None = None, timeout: float | None = None, safety_interval: float = 1, **kwargs: Any
    ) -> Iterator[None]:
        """kombu's loop, except that each wake-up gathers what else has arrived and handles it as one batch."""
        if self.batch == 1:
            yield from super().consume(limit=limit, timeout=timeout, safety_interval=safety_interval, **kwargs)
            return
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            # Deliveries of a connection that died are redelivered by the broker: never ack them here.
            self._pending.clear()
            while not self.should_stop:
                self.on_iteration()
                self._gathering = True
                try:
                    conn.drain_events(timeout=safety_interval)
                    until = time.monotonic() + self.linger
                    while len(self._pending) < self.batch:
                        try:
                            # What has already arrived joins at once; then wait out the linger.
                            conn.drain_events(timeout=max(until - time.monotonic(), 0.0005))
                        except TimeoutError:
                            break
                except TimeoutError:
                    conn.heartbeat_check()
                    continue
                except OSError:
                    if not self.should_stop:
                        raise
                    return
                finally:
                    self._gathering = False
                self.flush()
                yield

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
        if self._gathering:
            self._pending.append((message, event_id, event, handler))
            return
        self._process(message, event_id, event, handler)

    def flush(self) -> None:
        """Handle the gathered deliveries: together in one transaction, or one by one if that fails."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._handle_batch(pending)
        except Exception as exc:  # noqa: BLE001 - whatever it was, each message now meets it alone
            self.fallbacks += 1
            log.info("%s: a batch of %d failed (%s); handling each alone", self.group, len(pending), type(exc).__name__)
            for item in pending:
                self._process(*item)
            return
        self.batches += len(pending) > 1
        # One ack for the batch: every earlier delivery on this channel is either in it or was already
        # settled (dead-lettered, retried, requeued) when it arrived.
        pending[-1][0].ack(multiple=True)
        self.handled += len(pending)

    def _handle_batch(self, pending: Sequence[tuple[Message, str, dict[str, Any], Handler]]) -> None:
        unique: dict[str, tuple[dict[str, Any], Handler]] = {}
        for _message, event_id, event, handler in pending:
            unique.setdefault(event_id, (event, handler))  # the same event twice: handled once, both acked
        with self.services.uow() as uow:
            done = set(
                uow.session.scalars(
                    select(ProcessedMessage.event_id).where(
                        ProcessedMessage.consumer == self.group, ProcessedMessage.event_id.in_(list(unique))
                    )
                )
            )
            todo = [(event_id, event, handler) for event_id, (event, handler) in unique.items() if event_id not in done]
            if not todo:
                return
            if self.before_batch is not None:
                self.before_batch(uow, self.services, [event for _, event, _ in todo])
            for _event_id, event, handler in todo:
                handler(uow, self.services, event)
            now = self.services.clock.now()
            for event_id, _, _ in todo:  # one statement for the batch, at commit (db.persist), as alone
                insert_at_commit(
                    uow.session, ProcessedMessage, {"consumer": self.group, "event_id": event_id, "processed_at": now}
                )
            # An IntegrityError here (a competing consumer committed one of these first) rolls the
            # batch back; one by one, that message is then found done and acked.
            uow.commit()

    def _process(self, message: Message, event_id: str, event: dict[str, Any], handler: Handler) -> None:
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
            done = {"consumer": self.group, "event_id": event_id}
            if uow.session.connection().execute(_DONE, done).first() is not None:
                return  # redelivered after a crash between commit and ack: already done
            handler(uow, self.services, event)
            # With the handler's rows at commit, one statement (db.persist): no ORM object per message.
            insert_at_commit(uow.session, ProcessedMessage, {**done, "processed_at": self.services.clock.now()})
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
