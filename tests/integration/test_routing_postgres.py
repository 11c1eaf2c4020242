"""Routing and the partner side against PostgreSQL itself (one connection, rolled back after each test)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from referral_service.bootstrap import Services
from referral_service.db.models import Assignment, Deadline, OutboxMessage, RoutingDecision
from referral_service.domain.commands import AcceptAssignment, DeclineAssignment
from referral_service.domain.errors import Conflict, Forbidden
from referral_service.services import assignments
from referral_service.services.assignments import route_open_needs
from tests.integration.harness import World

pytestmark = pytest.mark.integration


def route(services: Services, referral_id: str) -> list[str]:
    with services.uow() as uow:
        offered = route_open_needs(uow, services, referral_id)
        uow.commit()
        return offered


def test_routing_twice_offers_each_service_once(pg_savepoint_services: Services) -> None:
    world = World(pg_savepoint_services)
    world.add_partner(services=["medical", "legal_aid"])
    referral_id = world.submit(world.caseworker(), needs=["medical", "legal_aid"])

    assert len(route(pg_savepoint_services, referral_id)) == 2
    assert route(pg_savepoint_services, referral_id) == []
    with pg_savepoint_services.uow() as uow:
        s = uow.session
        assert s.scalar(select(func.count()).select_from(Assignment)) == 2
        assert s.scalar(select(func.count()).select_from(Deadline).where(Deadline.kind == "accept")) == 2
        assert s.scalar(select(func.count()).select_from(RoutingDecision)) == 2
        partner_rows = s.scalars(
            select(OutboxMessage.routing_key).where(OutboxMessage.exchange == "referrals.partners")
        ).all()
        assert len(partner_rows) == 2 and all(k.startswith("partner.p-") for k in partner_rows)


def test_database_refuses_a_second_open_offer_for_one_service(pg_savepoint_services: Services) -> None:
    world = World(pg_savepoint_services)
    pid = world.add_partner()
    referral_id = world.submit(world.caseworker())
    route(pg_savepoint_services, referral_id)
    with pg_savepoint_services.uow() as uow, pytest.raises(IntegrityError):
        uow.session.add(
            Assignment(referral_id=referral_id, partner_id=pid, service="medical", status="offered", reasons=[])
        )
        uow.session.flush()


def test_capacity_counts_open_assignments_only(pg_savepoint_services: Services) -> None:
    world = World(pg_savepoint_services)
    small = world.add_partner(capacity=1, languages=["ps"])
    big = world.add_partner(capacity=50, languages=["en"])
    caseworker = world.caseworker()
    first = world.submit(caseworker)
    (a1,) = route(pg_savepoint_services, first)
    second = world.submit(caseworker)
    route(pg_savepoint_services, second)
    with pg_savepoint_services.uow() as uow:
        assert uow.session.scalars(select(Assignment.partner_id).where(Assignment.referral_id == second)).one() == big

    staff, _ = world.partner_staff(small)
    assignments.decline(pg_savepoint_services, DeclineAssignment(a1, "no_capacity"), staff)
    route(pg_savepoint_services, first)  # onward: the small partner is free again but already tried
    third = world.submit(caseworker)
    route(pg_savepoint_services, third)
    with pg_savepoint_services.uow() as uow:
        got = uow.session.scalars(select(Assignment.partner_id).where(Assignment.referral_id == third)).one()
    assert got == small


def test_only_the_assigned_partner_may_accept_and_only_once(pg_savepoint_services: Services) -> None:
    world = World(pg_savepoint_services)
    mine, other = world.add_partner(), world.add_partner(districts=["Mardan"])
    referral_id = world.submit(world.caseworker())
    (assignment_id,) = route(pg_savepoint_services, referral_id)
    with pg_savepoint_services.uow() as uow:
        assert uow.session.get(Assignment, assignment_id).partner_id == mine  # type: ignore[union-attr]
    outsider, _ = world.partner_staff(other)
    with pytest.raises(Forbidden):
        assignments.accept(pg_savepoint_services, AcceptAssignment(assignment_id), outsider)
    staff, _ = world.partner_staff(mine)
    assert assignments.accept(pg_savepoint_services, AcceptAssignment(assignment_id), staff)["status"] == "accepted"
    with pytest.raises(Conflict):
        assignments.accept(pg_savepoint_services, AcceptAssignment(assignment_id), staff)
