"""A transaction's audit entries are inserted together when it commits (issue 13: a list page reveals a name
per row), with every property of an entry inserted at once: in the action's transaction, in append order,
visible to a later statement of the same transaction, gone with a rollback or a close."""

from __future__ import annotations

from sqlalchemy import func, select

from referral_service.audit.log import AuditEvent, AuditFilter, pending_entries
from referral_service.bootstrap import Services
from referral_service.db.models import AuditEntry
from referral_service.services.audit import integrate_all, verify
from tests.conftest import FakeClock


def _count(services: Services) -> int:
    with services.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_a_transactions_entries_wait_for_its_commit_and_then_all_exist_in_append_order(
    services: Services, clock: FakeClock
) -> None:
    ids = []
    with services.uow() as uow:
        for n in range(5):
            ids.append(services.audit.append(uow.session, AuditEvent(action=f"test.batch.{n}")))
            clock.advance(milliseconds=1)  # the integrator sequences by (at, id), as before batching
        assert pending_entries(uow.session) == 5
        uow.commit()
        assert pending_entries(uow.session) == 0
    assert _count(services) == 5
    assert integrate_all(services) == 5
    with services.uow() as uow:
        indexed = uow.session.execute(select(AuditEntry.id, AuditEntry.idx).order_by(AuditEntry.idx)).all()
    assert [row.id for row in indexed] == ids
    report = verify(services)
    assert report.ok, report.line()


def test_a_statement_of_the_same_transaction_that_reads_the_log_sees_the_entries_appended_before_it(
    services: Services,
) -> None:
    with services.uow() as uow:
        first = services.audit.append(uow.session, AuditEvent(action="test.seen", actor_id="u-1"))
        rows = services.audit.query(uow.session, AuditFilter(actor_id="u-1"), limit=5)
        assert [row.id for row in rows] == [first]
        assert pending_entries(uow.session) == 0
        second = services.audit.append(uow.session, AuditEvent(action="test.seen", actor_id="u-1"))
        count = uow.session.scalar(select(func.count()).select_from(AuditEntry))
        assert count == 2
        uow.commit()
    with services.uow() as uow:
        found = {row.id for row in services.audit.query(uow.session, AuditFilter(actor_id="u-1"), limit=5)}
    assert found == {first, second}


def test_entries_of_a_session_closed_without_commit_are_dropped_and_not_carried_into_its_next_transaction(
    services: Services,
) -> None:
    session = services.session_factory()
    services.audit.append(session, AuditEvent(action="test.dropped"))
    session.close()
    assert pending_entries(session) == 0
    kept = services.audit.append(session, AuditEvent(action="test.kept"))
    session.commit()
    session.close()
    with services.uow() as uow:
        assert list(uow.session.scalars(select(AuditEntry.id))) == [kept]


def test_entries_of_a_rolled_back_transaction_are_dropped_and_the_next_commit_writes_only_its_own(
    services: Services,
) -> None:
    session = services.session_factory()
    services.audit.append(session, AuditEvent(action="test.rolled_back"))
    session.rollback()
    kept = services.audit.append(session, AuditEvent(action="test.kept"))
    session.commit()
    session.close()
    with services.uow() as uow:
        assert list(uow.session.scalars(select(AuditEntry.id))) == [kept]
