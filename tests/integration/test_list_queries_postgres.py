"""On PostgreSQL, where each statement is a round trip: a page of referrals writes the audit entries of its
reveals in one `executemany` at commit, whatever its number of rows, and the log still verifies (issue 13)."""

from __future__ import annotations

from referral_service.bootstrap import Services
from referral_service.domain.model import Actor, Role
from referral_service.services import audit, referrals, users
from referral_service.services.audit import integrate_all
from referral_service.services.referrals import submit_referral
from schemas import ReferralInputSchema
from tests.factories import referral_body
from tests.statements import audited_lists, statements


def test_a_page_of_referrals_on_postgresql_costs_the_same_statements_for_2_rows_as_for_12(
    pg_services: Services,
) -> None:
    made = users.create_user(pg_services, name="pg-list-caseworker", role="caseworker")
    caseworker = Actor(made["id"], Role.CASEWORKER)
    schema = ReferralInputSchema()

    def submit(n: int) -> None:
        for _ in range(n):
            body = referral_body(subject__cnic=None, subject__phone=None)
            submit_referral(pg_services, schema.load(body), caseworker)

    submit(2)
    before = audited_lists(pg_services)
    with statements(pg_services) as few:
        referrals.list_referrals(pg_services, caseworker, status=None, limit=25, cursor=None)
    after_small = audited_lists(pg_services)
    submit(10)
    with statements(pg_services) as many:
        large = referrals.list_referrals(pg_services, caseworker, status=None, limit=25, cursor=None)
    assert len(large["items"]) == 12
    assert (after_small - before, audited_lists(pg_services) - after_small) == (1 + 2, 1 + 12)
    assert len(many) == len(few), (len(few), len(many))
    integrate_all(pg_services)
    report = audit.verify(pg_services)
    assert report.ok, report.line()
