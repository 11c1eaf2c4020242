"""Every exchange, queue and binding the service uses, declared idempotently from here only.

* `referrals.events` (topic): every event, routing key = event type.
* `referrals.partners` (direct): offers and withdrawals for one partner, routing key
  `partner.{partner_id}`, bound to that partner's durable queue `partner.{partner_id}.assignments`.
* `referrals.dead` (direct) → `referrals.dead-letter`: messages a consumer gave up on, with the reason
  in the `x-dead-reason` header.
* One durable queue per consumer group (`referrals.{group}`), bound to the routing keys of the event
  classes it handles (the handler map in `workers.handlers`); competing consumers of a group share it.

The names come from `messaging.names`. On RabbitMQ the queues are quorum queues (replicated, and they
survive a broker restart); the embedded `memory://` transport gets the same names and bindings without
queue arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kombu import Connection, Exchange, Queue, binding

from referral_service.domain.events import Event
from referral_service.messaging.names import (
    DEAD_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEAD_ROUTING_KEY,
    EVENTS_EXCHANGE,
    PARTNERS_EXCHANGE,
    consumer_queue_name,
    partner_queue_name,
    partner_routing_key,
)

EVENTS = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
PARTNERS = Exchange(PARTNERS_EXCHANGE, type="direct", durable=True)
DEAD = Exchange(DEAD_EXCHANGE, type="direct", durable=True)
# The outbox stores an exchange by name; the relay publishes to the exchange of that name.
EXCHANGES: Mapping[str, Exchange] = {e.name: e for e in (EVENTS, PARTNERS)}


def _queue_arguments(connection: Connection) -> dict[str, str] | None:
    if connection.transport_cls in ("amqp", "pyamqp", "amqps") or connection.transport.driver_type == "amqp":
        return {"x-queue-type": "quorum"}
    return None


def consumer_queue(connection: Connection, group: str, event_types: Iterable[type[Event]]) -> Queue:
    """The group's queue, bound to the routing key of each event class it handles."""
    keys = sorted({cls.routing_key for cls in event_types})
    return Queue(
        consumer_queue_name(group),
        bindings=[binding(EVENTS, routing_key=key) for key in keys],
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def partner_queue(connection: Connection, partner_id: str) -> Queue:
    return Queue(
        partner_queue_name(partner_id),
        exchange=PARTNERS,
        routing_key=partner_routing_key(partner_id),
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def dead_letter_queue(connection: Connection) -> Queue:
    return Queue(
        DEAD_LETTER_QUEUE,
        exchange=DEAD,
        routing_key=DEAD_ROUTING_KEY,
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


# Consumer groups that no longer exist. "notify" turned partner events into notification rows; those rows
# are now written with the events themselves, so its queue (still bound on brokers that ran it) would
# only grow. Deleted at every declaration; deleting a missing queue is not an error.
RETIRED_GROUPS = ("notify",)


def declare_topology(
    connection: Connection, consumer_groups: Mapping[str, Iterable[type[Event]]], partner_ids: Iterable[str] = ()
) -> None:
    """Declare everything; safe to call at every start-up and from every process.

    `consumer_groups` is each group's handled event classes (`workers.handlers.CONSUMER_GROUPS`): declared
    before any consumer runs, so no event published meanwhile finds its queue missing.
    """
    channel = connection.default_channel
    for exchange in (EVENTS, PARTNERS, DEAD):
        exchange(channel).declare()
    queues = [consumer_queue(connection, group, types) for group, types in consumer_groups.items()]
    queues.append(dead_letter_queue(connection))
    queues.extend(partner_queue(connection, p) for p in partner_ids)
    for queue in queues:
        queue(channel).declare()
    for group in RETIRED_GROUPS:
        channel.queue_delete(consumer_queue_name(group))
