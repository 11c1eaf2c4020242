"""The per-account pause on PostgreSQL: concurrent wrong passwords (many workers) never lose a count."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services
from referral_service.db.models import User
from referral_service.domain.errors import Unauthenticated
from referral_service.services import users

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


def test_concurrent_wrong_passwords_are_all_counted(pg_services: Services) -> None:
    created = users.create_user(pg_services, name="pg-lockout", role="caseworker", password=PASSWORD)
    attempts = 8
    barrier = threading.Barrier(attempts)
    refused: list[bool] = []

    def guess() -> None:
        barrier.wait()
        try:
            users.sign_in(pg_services, "pg-lockout", "wrong guess")
        except Unauthenticated:
            refused.append(True)

    started = datetime.now(UTC)
    threads = [threading.Thread(target=guess) for _ in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    finished = datetime.now(UTC)

    assert len(refused) == attempts
    with pg_services.session_factory() as session:
        user = session.scalars(select(User).where(User.id == created["id"])).one()
        assert user.failed_logins == attempts
        # the pause that goes with the last count: 2 ** (8 - 5) minutes
        assert user.locked_until is not None
        assert started + timedelta(minutes=8) <= user.locked_until <= finished + timedelta(minutes=8)
    with pytest.raises(Unauthenticated):
        users.sign_in(pg_services, "pg-lockout", PASSWORD)
