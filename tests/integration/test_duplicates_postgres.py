"""Possible duplicates against PostgreSQL: concurrent decisions neither split a person nor decide twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services
from referral_service.db.models import PossibleDuplicate, Subject
from referral_service.domain.commands import ConfirmDuplicate, DismissDuplicate
from referral_service.domain.errors import Conflict
from referral_service.domain.model import Actor, Role
from referral_service.services import duplicates, users
from tests.integration.harness import World, unique_id

pytestmark = pytest.mark.integration


def _supervisor(services: Services) -> Actor:
    created = users.create_user(services, name=unique_id("sup"), role="supervisor")
    return Actor(created["id"], Role.SUPERVISOR, None, created["name"])


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _pairs(services: Services) -> dict[tuple[str, str], str]:
    with services.uow() as uow:
        rows = uow.session.scalars(select(PossibleDuplicate)).all()
        return {(d.subject_id, d.earlier_subject_id): d.id for d in rows}


def _subjects(services: Services, referral_ids: list[str]) -> list[str]:
    from referral_service.db.models import Referral

    with services.uow() as uow:
        by_referral = dict(
            uow.session.execute(select(Referral.id, Referral.subject_id).where(Referral.id.in_(referral_ids))).all()
        )
        return [by_referral[r] for r in referral_ids]


def _people(services: Services, subject_ids: list[str]) -> list[str | None]:
    with services.uow() as uow:
        people = dict(
            uow.session.execute(select(Subject.id, Subject.person_id).where(Subject.id.in_(subject_ids))).all()
        )
        return [people[s] for s in subject_ids]


def test_two_confirmations_sharing_a_subject_at_once_make_one_person(pg_services: Services) -> None:
    world = World(pg_services)
    cw, supervisor = world.caseworker(), _supervisor(pg_services)
    for n in range(3):  # several rounds: the race is not lost every time
        cnic, phone = f"42101-{n:07d}-1", f"+92333{n:07d}"
        one = world.submit(cw, subject__cnic=cnic, subject__phone=None)
        two = world.submit(cw, subject__cnic=cnic, subject__phone=phone)
        three = world.submit(cw, subject__cnic=None, subject__phone=phone)
        s1, s2, s3 = _subjects(pg_services, [one, two, three])
        pairs = _pairs(pg_services)
        results = _at_once(
            partial(duplicates.confirm, pg_services, ConfirmDuplicate(pairs[(s2, s1)]), supervisor),
            partial(duplicates.confirm, pg_services, ConfirmDuplicate(pairs[(s3, s2)]), supervisor),
        )
        assert all(isinstance(r, dict) and r["status"] == "confirmed" for r in results), results
        people = _people(pg_services, [s1, s2, s3])
        assert people[0] is not None and people.count(people[0]) == 3, people


def test_the_same_pair_decided_twice_at_once_is_decided_once(pg_services: Services) -> None:
    world = World(pg_services)
    cw, supervisor = world.caseworker(), _supervisor(pg_services)
    world.submit(cw)
    world.submit(cw)
    [dup_id] = _pairs(pg_services).values()
    results = _at_once(
        lambda: duplicates.confirm(pg_services, ConfirmDuplicate(dup_id), supervisor),
        lambda: duplicates.dismiss(pg_services, DismissDuplicate(dup_id), supervisor),
    )
    decided = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(decided) == 1 and len(refused) == 1, results
    with pg_services.uow() as uow:
        row = uow.session.get(PossibleDuplicate, dup_id)
        assert row is not None and row.status == decided[0]["status"]
