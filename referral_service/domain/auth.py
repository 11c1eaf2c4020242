"""Sign-in rules as data and pure functions: when a web session has ended, when an account is paused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# After this many wrong passwords in a row the account is paused, first for LOCK_FIRST, then twice as
# long for every further failure, never longer than LOCK_MAX (long enough to make guessing hopeless,
# short enough that someone locking a colleague out does not stop a day's casework).
LOCK_AFTER_FAILURES = 5
LOCK_FIRST = timedelta(minutes=1)
LOCK_MAX = timedelta(hours=1)

# last_seen_at is written at most this often: a page view is not a database write.
SESSION_TOUCH_EVERY = timedelta(minutes=1)
# Ended and expired session rows are kept this long (for investigating an incident), then deleted.
SESSION_KEEP_ENDED = timedelta(days=1)


def locked_until(failures: int, now: datetime) -> datetime | None:
    """The end of the pause after `failures` consecutive wrong passwords, or None below the threshold."""
    if failures < LOCK_AFTER_FAILURES:
        return None
    steps = min(failures - LOCK_AFTER_FAILURES, 16)  # 2**16 minutes is far past the cap already
    return now + min(LOCK_FIRST * (2**steps), LOCK_MAX)


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=12)

    def expired(self, *, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        return now - last_seen_at > self.idle or now - created_at > self.lifetime

    def needs_touch(self, last_seen_at: datetime, now: datetime) -> bool:
        return now - last_seen_at >= SESSION_TOUCH_EVERY

    def prune_before(self, now: datetime) -> tuple[datetime, datetime, datetime]:
        """Rows ended before the first, idle since before the second or started before the third can go."""
        return (
            now - SESSION_KEEP_ENDED,
            now - self.idle - SESSION_KEEP_ENDED,
            now - self.lifetime - SESSION_KEEP_ENDED,
        )
