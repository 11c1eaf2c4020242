"""Broker names have one home (`messaging.names`); each consumed event has one handler and one binding."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from referral_service.domain import events
from referral_service.domain.events import EVENT_TYPES
from referral_service.messaging import names
from referral_service.messaging.broker import connect
from referral_service.messaging.topology import EVENTS
from workers.consumer import find_handler
from workers.handlers import CONSUMER_GROUPS, group_queue

ROOT = Path(__file__).resolve().parents[2]
NAMES_MODULE = ROOT / "referral_service" / "messaging" / "names.py"
EVENTS_MODULE = ROOT / "referral_service" / "domain" / "events.py"
BROKER_NAMES = {
    names.EVENTS_EXCHANGE,
    names.PARTNERS_EXCHANGE,
    names.DEAD_EXCHANGE,
    names.DEAD_LETTER_QUEUE,
    names.DEAD_ROUTING_KEY,
    names.OUTBOX_CHANNEL,
    names.DEAD_REASON_HEADER,
    names.CONSUMER_HEADER,
    names.ATTEMPTS_HEADER,
    names.ORIGINAL_ROUTING_KEY_HEADER,
}
NAME_PREFIXES = ("partner.", "referrals.")


@pytest.fixture
def memory() -> Iterator[Connection]:
    conn = connect("memory://")
    yield conn
    conn.release()


def _event_classes() -> list[type[events.Event]]:
    """Every concrete event class defined in domain/events.py (the abstract AssignmentEvent and DeadlineEvent aside)."""
    found = [
        obj
        for obj in vars(events).values()
        if isinstance(obj, type) and issubclass(obj, events.Event) and obj.__module__ == events.__name__
    ]
    return [cls for cls in found if cls not in (events.Event, events.AssignmentEvent, events.DeadlineEvent)]


def test_every_event_class_is_registered_under_its_own_distinct_routing_key() -> None:
    classes = _event_classes()
    keys = Counter(cls.routing_key for cls in classes)
    assert [k for k, n in keys.items() if n > 1] == []
    assert {cls.routing_key: cls for cls in classes} == EVENT_TYPES


@pytest.mark.parametrize("group", sorted(CONSUMER_GROUPS))
def test_each_consumed_event_class_has_one_handler_and_one_binding_of_its_routing_key(
    group: str, memory: Connection
) -> None:
    handlers = CONSUMER_GROUPS[group]
    assert handlers, group
    queue = group_queue(memory, group)
    bindings = Counter((b.exchange.name, b.routing_key) for b in queue.bindings)
    for cls, handler in handlers.items():
        assert EVENT_TYPES.get(cls.routing_key) is cls, f"{cls.__name__} is not an event of domain/events.py"
        assert bindings[(EVENTS.name, cls.routing_key)] == 1, cls.__name__
        # What the consumer finds for a message of this type is the handler the map names.
        assert find_handler(handlers, cls.routing_key) is handler
    # Nothing is bound that no handler handles: such messages could only be dead-lettered.
    assert set(bindings) == {(EVENTS.name, cls.routing_key) for cls in handlers}
    assert queue.name == names.consumer_queue_name(group)


def test_a_message_type_no_group_handles_finds_no_handler() -> None:
    router = CONSUMER_GROUPS["router"]
    assert events.AssignmentOffered not in router
    assert find_handler(router, events.AssignmentOffered.routing_key) is None
    assert find_handler(router, "no.such.event") is None


def test_partner_routing_keys_and_queue_names_round_trip() -> None:
    key = names.partner_routing_key("p-peshawar-medical")
    assert key == "partner.p-peshawar-medical"
    assert names.partner_of_routing_key(key) == "p-peshawar-medical"
    assert names.partner_of_routing_key("referral.submitted") is None
    assert names.partner_queue_name("p-peshawar-medical") == "partner.p-peshawar-medical.assignments"


def _string_literals(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _sources() -> Iterator[Path]:
    for package in ("referral_service", "workers", "schemas"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_broker_names_and_routing_keys_are_spelled_in_one_module_each() -> None:
    routing_keys = {cls.routing_key for cls in _event_classes()}
    stray = []
    for path in _sources():
        if path in (NAMES_MODULE, EVENTS_MODULE):
            continue
        for line, value in _string_literals(path):
            # A bare prefix is the start of an f-string such as f"partner.{partner_id}".
            if value in BROKER_NAMES or value in NAME_PREFIXES or value in routing_keys:
                stray.append(f"{path.relative_to(ROOT)}:{line}: {value!r}")
    assert stray == []
