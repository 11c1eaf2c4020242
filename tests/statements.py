"""What a piece of code asks the database: for tests that a page's statements do not grow with its rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from referral_service.audit.log import AuditFilter
from referral_service.bootstrap import Services


@contextmanager
def statements(services: Services, kind: str | None = None) -> Iterator[list[str]]:
    """Every statement sent to the database meanwhile (an `executemany` counts once: one round trip), or
    only those that start with `kind` ("SELECT")."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if kind is None or statement.lstrip().upper().startswith(kind):
            seen.append(statement)

    event.listen(services.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(services.engine, "before_cursor_execute", count)


def audited_lists(services: Services) -> int:
    """How many `referral.list` entries the audit log holds."""
    with services.uow() as uow:
        return len(services.audit.query(uow.session, AuditFilter(action="referral.list"), limit=1000))
