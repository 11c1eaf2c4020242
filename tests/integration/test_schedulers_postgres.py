"""Two deadline schedulers at once on PostgreSQL: every expired offer lapses, and is routed onward,
exactly once; every overdue deadline is reminded once per wake (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Assignment, Deadline, OutboxMessage
from referral_service.domain.commands import AcceptAssignment
from referral_service.messaging.names import EVENTS_EXCHANGE
from referral_service.services import assignments
from referral_service.services.assignments import route_open_needs
from referral_service.services.deadlines import fire_due_deadlines
from tests.conftest import FakeClock
from tests.integration.harness import World

pytestmark = pytest.mark.integration

OFFERS = 24  # left unanswered: each must expire once
ACCEPTED = 12  # accepted and never contacted: each must become overdue once


def _route(services: Services, referral_id: str) -> list[str]:
    with services.uow() as uow:
        offered = route_open_needs(uow, services, referral_id)
        uow.commit()
        return offered


def _events(services: Services, kind: str) -> Counter[str]:
    with services.uow() as uow:
        bodies = uow.session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.type == kind, OutboxMessage.exchange == EVENTS_EXCHANGE)
        ).all()
    return Counter(str(b.get("assignment_id")) for b in bodies)


def test_two_schedulers_at_once_expire_each_offer_and_remind_each_overdue_deadline_exactly_once(
    pg_services: Services,
) -> None:
    world = World(pg_services)
    first = world.add_partner(capacity=100, languages=["ps"])  # speaks the client's language: offered first
    world.add_partner(capacity=100, languages=["ur"])
    staff, _ = world.partner_staff(first)
    caseworker = world.caseworker()
    referrals = [
        world.submit(caseworker, risk_level="critical", subject__cnic=None, subject__phone=None)
        for _ in range(OFFERS + ACCEPTED)
    ]
    offers = [_route(pg_services, r)[0] for r in referrals]
    for assignment_id in offers[OFFERS:]:
        assignments.accept(pg_services, AcceptAssignment(assignment_id), staff)

    # Five hours on: every critical offer (1 h) lapsed, every first contact (4 h) is overdue.
    later = FakeClock(FakeClock().now() + timedelta(hours=5))
    schedulers = [bootstrap(pg_services.settings, clock=later) for _ in range(2)]
    handled = [0, 0]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            while n := fire_due_deadlines(schedulers[i], batch_size=5):
                handled[i] += n
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        # What one of them skipped while the other held it is picked up by the next tick.
        while n := fire_due_deadlines(schedulers[0], batch_size=50):
            handled[0] += n
    finally:
        for s in schedulers:
            s.dispose()
    assert errors == []
    assert sum(handled) == OFFERS + ACCEPTED
    assert all(handled), f"both schedulers did part of the work: {handled}"

    expired = _events(pg_services, "assignment.expired")
    assert expired == Counter({a: 1 for a in offers[:OFFERS]})
    overdue = _events(pg_services, "followup.overdue")
    assert overdue == Counter({a: 1 for a in offers[OFFERS:]})
    with pg_services.uow() as uow:
        s = uow.session
        statuses = Counter(s.scalars(select(Assignment.status)).all())
        assert statuses == Counter({"expired": OFFERS, "accepted": ACCEPTED})
        reminded = s.scalars(select(Deadline.reminders).where(Deadline.status == "overdue")).all()
        assert sorted(reminded) == [1] * ACCEPTED

    # The router hears of each lapse once and routes onward once: one new offer per lapsed one.
    for referral_id in referrals[:OFFERS]:
        assert len(_route(pg_services, referral_id)) == 1
        assert _route(pg_services, referral_id) == []
    with pg_services.uow() as uow:
        per_referral = Counter(
            uow.session.scalars(select(Assignment.referral_id).where(Assignment.status == "offered")).all()
        )
        assert per_referral == Counter({r: 1 for r in referrals[:OFFERS]})
        assert uow.session.scalar(select(func.count()).select_from(Assignment)) == 2 * OFFERS + ACCEPTED
