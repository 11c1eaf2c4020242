"""Lists ask the database a fixed number of questions per page, not a few per row (issue 13's page times:
on PostgreSQL each round trip costs a fraction of a millisecond, times every row of every page)."""

from __future__ import annotations

from typing import Any

from referral_service.bootstrap import Services
from referral_service.domain.model import Actor, Role
from referral_service.services import audit, duplicates, referrals
from referral_service.services.audit import integrate_all
from referral_service.services.referrals import submit_referral
from schemas import ReferralInputSchema
from tests.factories import referral_body
from tests.statements import audited_lists, statements


def _submit(services: Services, actor: Actor, n: int, **overrides: Any) -> None:
    for _ in range(n):
        submit_referral(services, ReferralInputSchema().load(referral_body(**overrides)), actor)


def test_a_page_of_referrals_costs_the_same_queries_for_2_rows_as_for_12(services: Services, make_user: Any) -> None:
    caseworker = make_user("caseworker").actor
    _submit(services, caseworker, 2, subject__cnic=None, subject__phone=None)
    with statements(services, "SELECT") as few:
        small = referrals.list_referrals(services, caseworker, status=None, limit=25, cursor=None)
    _submit(services, caseworker, 10, subject__cnic=None, subject__phone=None)
    with statements(services, "SELECT") as many:
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
    with statements(services, "SELECT") as few:
        small = duplicates.list_duplicates(services, supervisor, status=None, limit=25, cursor=None)
    for k in range(4):  # four more people, each a pair of their own
        _submit(services, caseworker, 2, subject__cnic=f"17301-765432{k}-4", subject__phone=None)
    with statements(services, "SELECT") as many:
        large = duplicates.list_duplicates(services, supervisor, status=None, limit=25, cursor=None)
    assert (len(small["items"]), len(large["items"])) == (1, 5)
    assert all(item["referral"]["subject"]["full_name"] for item in large["items"])
    assert len(many) == len(few)


def test_a_page_of_referrals_writes_its_reveals_audit_entries_in_one_statement_for_2_rows_as_for_12(
    services: Services, make_user: Any
) -> None:
    caseworker = make_user("caseworker").actor
    _submit(services, caseworker, 2, subject__cnic=None, subject__phone=None)
    before = audited_lists(services)
    with statements(services) as few:
        referrals.list_referrals(services, caseworker, status=None, limit=25, cursor=None)
    after_small = audited_lists(services)
    _submit(services, caseworker, 10, subject__cnic=None, subject__phone=None)
    with statements(services) as many:
        large = referrals.list_referrals(services, caseworker, status=None, limit=25, cursor=None)
    assert len(large["items"]) == 12
    # Every reveal still has its committed entry, one per row, besides the page's own "referral.list".
    assert (after_small - before, audited_lists(services) - after_small) == (1 + 2, 1 + 12)
    inserts = [s for s in many if s.lstrip().upper().startswith("INSERT INTO AUDIT_ENTRIES")]
    # One for the page's authorization (a transaction of its own, before the page's) and one, an
    # `executemany`, for every reveal of the page.
    assert len(inserts) == 2, inserts
    assert len(many) == len(few), (len(few), len(many))
    integrate_all(services)
    report = audit.verify(services)
    assert report.ok, report.line()
