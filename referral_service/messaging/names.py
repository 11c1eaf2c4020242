"""Every name the service gives the broker, and the database channel that wakes the relays: here only.

Kept free of kombu and of everything else, so the unit of work (`db.session`), the topology, the
relay, the consumers and the tests all import the same strings. An event's own routing key is its
class's `routing_key` (`domain.events`); which events a consumer group handles is the handler map in
`workers.handlers`.
"""

from __future__ import annotations

# Topic exchange: every event, routing key = the event's type.
EVENTS_EXCHANGE = "referrals.events"
# Direct exchange: what one partner must receive (offers, withdrawals), routing key `partner.{id}`.
PARTNERS_EXCHANGE = "referrals.partners"
# Direct exchange and its one queue: messages a consumer gave up on.
DEAD_EXCHANGE = "referrals.dead"
DEAD_LETTER_QUEUE = "referrals.dead-letter"
DEAD_ROUTING_KEY = "dead"
# Headers of a dead-lettered or retried message: why, which group, how often, and its first key.
DEAD_REASON_HEADER = "x-dead-reason"
CONSUMER_HEADER = "x-consumer"
ATTEMPTS_HEADER = "x-attempts"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
# PostgreSQL LISTEN/NOTIFY channel: new outbox rows were committed.
OUTBOX_CHANNEL = "referral_outbox"

_PARTNER_PREFIX = "partner."


def consumer_queue_name(group: str) -> str:
    """The durable queue a consumer group's competing workers share."""
    return f"referrals.{group}"


def partner_routing_key(partner_id: str) -> str:
    return f"{_PARTNER_PREFIX}{partner_id}"


def partner_of_routing_key(routing_key: str) -> str | None:
    """The partner a `referrals.partners` routing key addresses; None for any other key."""
    if not routing_key.startswith(_PARTNER_PREFIX):
        return None
    return routing_key.removeprefix(_PARTNER_PREFIX) or None


def partner_queue_name(partner_id: str) -> str:
    """Each partner organisation's own durable queue for its offers (a contract name)."""
    return f"{_PARTNER_PREFIX}{partner_id}.assignments"
