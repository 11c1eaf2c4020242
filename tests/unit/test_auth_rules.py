"""The sign-in rules on their own: the pause schedule and when a web session has ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referral_service.domain.auth import SessionPolicy, locked_until

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "pause"),
    [
        (0, None),
        (4, None),
        (5, timedelta(minutes=1)),
        (6, timedelta(minutes=2)),
        (7, timedelta(minutes=4)),
        (10, timedelta(minutes=32)),
        (11, timedelta(hours=1)),
        (12, timedelta(hours=1)),
        (10_000, timedelta(hours=1)),
    ],
)
def test_pause_starts_at_five_failures_and_doubles_up_to_an_hour(failures: int, pause: timedelta | None) -> None:
    until = locked_until(failures, NOW)
    assert (until - NOW if until else None) == pause


def test_session_ends_when_idle_too_long_or_too_old() -> None:
    rules = SessionPolicy(idle=timedelta(minutes=30), lifetime=timedelta(hours=12))
    started = NOW - timedelta(hours=11)
    assert not rules.expired(created_at=started, last_seen_at=NOW - timedelta(minutes=30), now=NOW)
    assert rules.expired(created_at=started, last_seen_at=NOW - timedelta(minutes=31), now=NOW)
    assert rules.expired(created_at=NOW - timedelta(hours=12, seconds=1), last_seen_at=NOW, now=NOW)


def test_last_seen_is_refreshed_once_a_minute_at_most() -> None:
    rules = SessionPolicy()
    assert not rules.needs_touch(NOW - timedelta(seconds=59), NOW)
    assert rules.needs_touch(NOW - timedelta(seconds=60), NOW)
