"""Lists ask the database a fixed number of questions per page, not a few per row (issue 13's page times:
on PostgreSQL each round trip costs a fraction of a millisecond, times every row of every page)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from referral_service.bootstrap import Services
from referral_service.domain.model import Actor, Role
from referral_service.services import duplicates, referrals
from referral_service.services.referrals import submit_referral
from schemas import ReferralInputSchema
from tests.factories import referral_body


@contextmanager
def selects(services: Services) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(services.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(services.engine, "before_cursor_execute", count)


def _submit(services: Services, actor: Actor, n: int, **overrides: Any) -> None:
    for _ in range(n):
        submit_referral(services, ReferralInputSchema().load(referral_body(**overrides)), actor)


def test_a_page_of_referrals_costs_the_same_queries_for_2_rows_as_for_12(services: Services, make_user: Any) -> None:
    caseworker = make_user("caseworker").actor
    _submit(services, caseworker, 2, subject__cnic=None, subject__phone=None)
    with selects(services) as few:
        small = referrals.list_referrals(services, caseworker, status=None, limit=25, cursor=None)
    _submit(services, caseworker, 10, subject__cnic=None, subject__phone=None)
    with selects(services) as many:
        large = referrals.list_referrals(services, caseworker, status=None, limit=25, cursor=None)
    assert (len(small["items"]), len(large["items"])) == (2, 12)
    assert all(item["subject"]["full_name"] for item in large["items"])  # names still revealed (and audited)
    assert len(many) == len(few)


def test_a_page_of_possible_duplicates_costs_the_same_queries_for_1_pair_as_for_5(
    services: Services, make_user: Any
) -> None:
    caseworker = make_user("caseworker").actor
    supervisor = Actor(make_user("supervisor").actor.user_id, Role.SUPERVISOR)
    same = {"subject__cnic": "17301-7654321-3", "subject__phone": None}
    _submit(services, caseworker, 2, **same)
    with selects(services) as few:
        small = duplicates.list_duplicates(services, supervisor, status=None, limit=25, cursor=None)
    for k in range(4):  # four more people, each a pair of their own
        _submit(services, caseworker, 2, subject__cnic=f"17301-765432{k}-4", subject__phone=None)
    with selects(services) as many:
        large = duplicates.list_duplicates(services, supervisor, status=None, limit=25, cursor=None)
    assert (len(small["items"]), len(large["items"])) == (1, 5)
    assert all(item["referral"]["subject"]["full_name"] for item in large["items"])
    assert len(many) == len(few)
