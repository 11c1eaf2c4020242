"""Follow-up deadlines by risk level, as data (`DeadlinePolicy`), overridable from a JSON file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from referral_service.domain.model import RISK_LEVELS

KINDS = ("accept", "first_contact", "followup_every")

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
                "critical": RiskDeadlines(accept=1 * h, first_contact=4 * h, followup_every=7 * d),
                "high": RiskDeadlines(accept=4 * h, first_contact=24 * h, followup_every=14 * d),
                "medium": RiskDeadlines(accept=24 * h, first_contact=3 * d, followup_every=30 * d),
                "low": RiskDeadlines(accept=3 * d, first_contact=7 * d, followup_every=60 * d),
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
            if not isinstance(entry, dict) or set(entry) - set(KINDS):
                raise ValueError(f"{level}: expected keys among {', '.join(KINDS)}")
            levels[level] = replace(levels[level], **{k: parse_duration(v) for k, v in entry.items()})
        return cls(levels)
