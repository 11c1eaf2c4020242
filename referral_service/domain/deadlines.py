"""Follow-up deadlines by risk level, as data (`DeadlinePolicy`), overridable from a JSON file.

Per risk level: how long a partner has to accept an offer (`accept`), to make first contact after
accepting (`first_contact`), and between follow-ups until the case is closed (`followup_every`); how often
an overdue deadline is reminded (`remind_every`) and after how many overdue reminders it goes to the
supervisors (`escalate_after`); and at which fraction of a contact or follow-up window the partner is
told it is coming due (`due_notice`, e.g. 0.8: at 80 % of the window).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from referral_service.domain.model import RISK_LEVELS

KINDS = ("accept", "first_contact", "followup_every")
DURATION_KEYS = (*KINDS, "remind_every")
KEYS = (*DURATION_KEYS, "escalate_after", "due_notice")

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """ISO-8601 durations of weeks, days, hours, minutes and seconds (no months: they vary)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not an ISO-8601 duration like PT4H or P7D: {text!r}")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return timedelta(**parts)


@dataclass(frozen=True)
class RiskDeadlines:
    accept: timedelta
    first_contact: timedelta
    followup_every: timedelta
    remind_every: timedelta = timedelta(days=1)
    escalate_after: int = 2
    due_notice: float = 0.8

    def as_data(self) -> dict[str, str | int | float]:
        """The level as the policy file writes it (ISO-8601 durations), for showing the effective policy."""
        return {
            **{k: format_duration(getattr(self, k)) for k in DURATION_KEYS},
            "escalate_after": self.escalate_after,
            "due_notice": self.due_notice,
        }


@dataclass(frozen=True)
class DeadlinePolicy:
    levels: dict[str, RiskDeadlines]

    def for_risk(self, risk_level: str) -> RiskDeadlines:
        return self.levels[risk_level]

    @classmethod
    def default(cls) -> DeadlinePolicy:
        h, d = timedelta(hours=1), timedelta(days=1)
        return cls(
            {
                "critical": RiskDeadlines(
                    accept=1 * h, first_contact=4 * h, followup_every=7 * d, remind_every=2 * h, escalate_after=2
                ),
                "high": RiskDeadlines(
                    accept=4 * h, first_contact=24 * h, followup_every=14 * d, remind_every=6 * h, escalate_after=2
                ),
                "medium": RiskDeadlines(
                    accept=24 * h, first_contact=3 * d, followup_every=30 * d, remind_every=1 * d, escalate_after=3
                ),
                "low": RiskDeadlines(
                    accept=3 * d, first_contact=7 * d, followup_every=60 * d, remind_every=2 * d, escalate_after=3
                ),
            }
        )

    @classmethod
    def load(cls, path: Path | None) -> DeadlinePolicy:
        """Built-in policy, with the levels a file names overridden; ValueError names the problem."""
        policy = cls.default()
        if path is None:
            return policy
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            raise ValueError(f"{path} is not a readable JSON file") from None
        if not isinstance(data, dict):
            raise ValueError("the policy must be a JSON object keyed by risk level")
        levels = dict(policy.levels)
        for level, entry in data.items():
            if level not in RISK_LEVELS:
                raise ValueError(f"unknown risk level {level!r}; expected one of {', '.join(RISK_LEVELS)}")
            if not isinstance(entry, dict) or set(entry) - set(KEYS):
                raise ValueError(f"{level}: expected keys among {', '.join(KEYS)}")
            values: dict[str, Any] = {}
            for key, value in entry.items():
                if key in DURATION_KEYS:
                    values[key] = parse_duration(value)
                    if not values[key]:
                        raise ValueError(f"{level}.{key}: must be longer than zero")
                elif key == "escalate_after":
                    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                        raise ValueError(f"{level}.escalate_after: a whole number of reminders from 0 to 100")
                    values[key] = value
                else:
                    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                        raise ValueError(f"{level}.due_notice: a fraction of the window between 0 and 1, e.g. 0.8")
                    values[key] = float(value)
            levels[level] = replace(levels[level], **values)
        return cls(levels)

    def as_data(self) -> dict[str, dict[str, str | int | float]]:
        return {level: self.levels[level].as_data() for level in RISK_LEVELS}


def format_duration(value: timedelta) -> str:
    """ISO-8601 for a duration, in the largest whole units (P7D, PT4H, P1DT6H, PT90M)."""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "") if seconds else "PT0S"
