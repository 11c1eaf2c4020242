"""A unit of work's failure hooks: run after it ends by an error, outside it; never after a commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from referral_service.db.session import UnitOfWork, current_unit_of_work, make_engine
from referral_service.domain.errors import Conflict


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    engine = make_engine("sqlite://")
    yield sessionmaker(engine)
    engine.dispose()


def test_a_failure_hook_gets_the_error_after_the_unit_of_work_is_closed(factory: sessionmaker[Session]) -> None:
    seen: list[tuple[BaseException, object]] = []
    with pytest.raises(Conflict), UnitOfWork(factory) as uow:
        uow.on_failure(lambda error: seen.append((error, current_unit_of_work())))
        raise Conflict("the case moved on")
    [(error, inside)] = seen
    assert isinstance(error, Conflict) and inside is None, "the hook runs outside the failed unit of work"


def test_no_failure_hook_runs_after_a_commit_or_a_quiet_exit(factory: sessionmaker[Session]) -> None:
    seen: list[BaseException] = []
    with pytest.raises(Conflict), UnitOfWork(factory) as uow:
        uow.on_failure(seen.append)
        uow.commit()
        raise Conflict("after the commit: what was done stays done")
    with UnitOfWork(factory) as uow:
        uow.on_failure(seen.append)
    assert seen == []


def test_a_failing_hook_does_not_replace_the_error_that_ended_the_unit_of_work(factory: sessionmaker[Session]) -> None:
    def broken(_error: BaseException) -> None:
        raise RuntimeError("the hook's own failure")

    later: list[BaseException] = []
    with pytest.raises(Conflict), UnitOfWork(factory) as uow:
        uow.on_failure(broken)
        uow.on_failure(later.append)
        raise Conflict("the case moved on")
    assert len(later) == 1, "the hooks after a failing one still run"
