"""Events: facts in the past tense, identifiers only (never personal data).

Each event class maps to one routing key of the contract. `to_message` is the wire body.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

EVENT_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    routing_key: ClassVar[str]
    referral_id: str | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=_now)

    def to_message(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.routing_key,
            "version": EVENT_VERSION,
            "occurred_at": self.occurred_at.isoformat(),
        }
        for f in dataclasses.fields(self):
            if f.name not in ("event_id", "occurred_at"):
                body[f.name] = getattr(self, f.name)
        return body


@dataclass(frozen=True, kw_only=True)
class ReferralSubmitted(Event):
    routing_key = "referral.submitted"
    subject_id: str
    risk_level: str
    consent_given: bool


@dataclass(frozen=True, kw_only=True)
class ReferralRouted(Event):
    routing_key = "referral.routed"
    assignment_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class ReferralUnroutable(Event):
    routing_key = "referral.unroutable"
    services: list[str]


@dataclass(frozen=True, kw_only=True)
class AssignmentEvent(Event):
    routing_key = "assignment.event"
    assignment_id: str
    partner_id: str
    service: str


@dataclass(frozen=True, kw_only=True)
class AssignmentOffered(AssignmentEvent):
    routing_key = "assignment.offered"
    risk_level: str
    accept_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class AssignmentAccepted(AssignmentEvent):
    routing_key = "assignment.accepted"


@dataclass(frozen=True, kw_only=True)
class AssignmentDeclined(AssignmentEvent):
    routing_key = "assignment.declined"
    reason: str


@dataclass(frozen=True, kw_only=True)
class AssignmentExpired(AssignmentEvent):
    routing_key = "assignment.expired"


@dataclass(frozen=True, kw_only=True)
class AssignmentWithdrawn(AssignmentEvent):
    routing_key = "assignment.withdrawn"
    reason: str


@dataclass(frozen=True, kw_only=True)
class AssignmentClosed(AssignmentEvent):
    routing_key = "assignment.closed"
    outcome: str


@dataclass(frozen=True, kw_only=True)
class FollowUpRecorded(Event):
    routing_key = "followup.recorded"
    assignment_id: str
    followup_id: str
    outcome: str


@dataclass(frozen=True, kw_only=True)
class DeadlineEvent(Event):
    """A contact or follow-up deadline of one assignment; also delivered to the partner's own queue."""

    routing_key = "followup.event"
    assignment_id: str | None
    deadline_id: str
    kind: str
    risk_level: str
    partner_id: str | None = None
    service: str | None = None
    due_at: str | None = None  # ISO 8601


@dataclass(frozen=True, kw_only=True)
class FollowUpDue(DeadlineEvent):
    """The deadline is coming due (at the policy's `due_notice` fraction of its window)."""

    routing_key = "followup.due"


@dataclass(frozen=True, kw_only=True)
class FollowUpOverdue(DeadlineEvent):
    """The deadline passed unmet (reminder 1), and again every `remind_every` while it stays unmet."""

    routing_key = "followup.overdue"
    reminder: int = 1


@dataclass(frozen=True, kw_only=True)
class FollowUpEscalated(DeadlineEvent):
    """The deadline stayed unmet through `escalate_after` reminders: for the supervisors, not the partner."""

    routing_key = "followup.escalated"
    reminders: int = 0


@dataclass(frozen=True, kw_only=True)
class ReferralClosed(Event):
    routing_key = "referral.closed"


@dataclass(frozen=True, kw_only=True)
class ReferralWithdrawn(Event):
    routing_key = "referral.withdrawn"


@dataclass(frozen=True, kw_only=True)
class ReferralReopened(Event):
    routing_key = "referral.reopened"


@dataclass(frozen=True, kw_only=True)
class ConsentWithdrawn(Event):
    routing_key = "referral.consent_withdrawn"


@dataclass(frozen=True, kw_only=True)
class SubjectErased(Event):
    routing_key = "subject.erased"
    subject_id: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.routing_key: cls
    for cls in (
        ReferralSubmitted,
        ReferralRouted,
        ReferralUnroutable,
        AssignmentOffered,
        AssignmentAccepted,
        AssignmentDeclined,
        AssignmentExpired,
        AssignmentWithdrawn,
        AssignmentClosed,
        FollowUpRecorded,
        FollowUpDue,
        FollowUpOverdue,
        FollowUpEscalated,
        ReferralClosed,
        ReferralWithdrawn,
        ReferralReopened,
        ConsentWithdrawn,
        SubjectErased,
    )
}

# What a partner's own systems (webhook, e-mail) hear of: the contract's list of webhook events. Their
# partner-queue rows in the outbox are marked for the notify worker when they are written.
PARTNER_SYSTEM_EVENTS: tuple[str, ...] = tuple(
    cls.routing_key for cls in (AssignmentOffered, AssignmentWithdrawn, FollowUpDue, FollowUpOverdue)
)
