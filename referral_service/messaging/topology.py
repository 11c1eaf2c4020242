"""Every exchange, queue and binding the service uses, declared idempotently from here only.

* `referrals.events` (topic): every event, routing key = event type.
* `referrals.partners` (direct): offers and withdrawals for one partner, routing key
  `partner.{partner_id}`, bound to that partner's durable queue `partner.{partner_id}.assignments`.
* `referrals.dead` (direct) → `referrals.dead-letter`: messages a consumer gave up on, with the reason
  in the `x-dead-reason` header.
* One durable queue per consumer group (`referrals.{group}`), bound to the event types it handles;
  competing consumers of a group share the queue.

On RabbitMQ the queues are quorum queues (replicated, and they survive a broker restart); the
embedded `memory://` transport gets the same names and bindings without queue arguments.
"""

from __future__ import annotations

from kombu import Connection, Exchange, Queue, binding

EVENTS = Exchange("referrals.events", type="topic", durable=True)
PARTNERS = Exchange("referrals.partners", type="direct", durable=True)
DEAD = Exchange("referrals.dead", type="direct", durable=True)
DEAD_ROUTING_KEY = "dead"

# Consumer group → the event types it handles. The router re-routes on decline and expiry.
CONSUMER_GROUPS: dict[str, tuple[str, ...]] = {
    "router": ("referral.submitted", "referral.reopened", "assignment.declined", "assignment.expired"),
}


def _queue_arguments(connection: Connection) -> dict[str, str] | None:
    if connection.transport_cls in ("amqp", "pyamqp", "amqps") or connection.transport.driver_type == "amqp":
        return {"x-queue-type": "quorum"}
    return None


def consumer_queue(connection: Connection, group: str) -> Queue:
    return Queue(
        f"referrals.{group}",
        bindings=[binding(EVENTS, routing_key=key) for key in CONSUMER_GROUPS[group]],
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def partner_queue_name(partner_id: str) -> str:
    return f"partner.{partner_id}.assignments"


def partner_queue(connection: Connection, partner_id: str) -> Queue:
    return Queue(
        partner_queue_name(partner_id),
        exchange=PARTNERS,
        routing_key=f"partner.{partner_id}",
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def dead_letter_queue(connection: Connection) -> Queue:
    return Queue(
        "referrals.dead-letter",
        exchange=DEAD,
        routing_key=DEAD_ROUTING_KEY,
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def declare_topology(connection: Connection, partner_ids: list[str] | tuple[str, ...] = ()) -> None:
    """Declare everything; safe to call at every start-up and from every process."""
    channel = connection.default_channel
    for exchange in (EVENTS, PARTNERS, DEAD):
        exchange(channel).declare()
    queues = [consumer_queue(connection, g) for g in CONSUMER_GROUPS]
    queues.append(dead_letter_queue(connection))
    queues.extend(partner_queue(connection, p) for p in partner_ids)
    for queue in queues:
        queue(channel).declare()
