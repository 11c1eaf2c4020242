"""Commands: orders given to the service layer, one per state change, each handled by one function.

Every handler that a person drives is called `handler(services, command, actor)`. The first group is
what people ask for (through the API, the pages or the CLI); the second is what the workers do on
their own (routing, the deadline scheduler); the state machine (`domain/lifecycle.py`) takes both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from referral_service.domain.model import SubjectInput


# -- a caseworker or supervisor, on a referral ------------------------------------------------------
@dataclass(frozen=True)
class SubmitReferral:
    subject: SubjectInput
    needs: list[str]
    risk_level: str
    consent_given: bool
    consent_method: str | None = None
    consent_share: list[str] = field(default_factory=list)
    incident_type: str | None = None
    incident_date: date | None = None
    incident_narrative: str | None = None
    staff_sex_preference: str = "any"


@dataclass(frozen=True)
class WithdrawConsent:
    referral_id: str
    note: str | None = None


@dataclass(frozen=True)
class WithdrawReferral:
    referral_id: str
    note: str | None = None


@dataclass(frozen=True)
class ReopenReferral:
    referral_id: str
    note: str


# -- partner staff (and supervisors, for closing) on one assignment --------------------------------------
@dataclass(frozen=True)
class AcceptAssignment:
    assignment_id: str


@dataclass(frozen=True)
class DeclineAssignment:
    assignment_id: str
    reason: str
    note: str | None = None


@dataclass(frozen=True)
class RecordFollowUp:
    assignment_id: str
    outcome: str
    note: str | None = None
    # Chosen with the order, like an event id, so the state machine can name the follow-up in its event.
    followup_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class CloseAssignment:
    assignment_id: str
    outcome: str
    note: str | None = None
    services_delivered: list[str] = field(default_factory=list)


# -- supervisors, on a possible duplicate -----------------------------------------------------------------
@dataclass(frozen=True)
class ConfirmDuplicate:
    duplicate_id: str


@dataclass(frozen=True)
class DismissDuplicate:
    duplicate_id: str


# -- the workers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteReferral:
    """Offer every open need to the best partner left (the router, on submit, re-open, decline, expiry)."""

    referral_id: str


@dataclass(frozen=True)
class OfferAssignment:
    """One step of routing: offer `service` of the referral to `partner_id` (chosen by `domain/routing.py`)."""

    assignment_id: str
    partner_id: str
    service: str


@dataclass(frozen=True)
class ExpireOffer:
    """The accept deadline passed with the offer unanswered (the deadline scheduler)."""

    assignment_id: str


@dataclass(frozen=True)
class WithdrawAssignment:
    """Pull one open assignment back: what withdrawing the referral or the consent does to each."""

    assignment_id: str
    reason: str


@dataclass(frozen=True)
class FireDeadline:
    """A pending deadline came due (the deadline scheduler)."""

    deadline_id: str


@dataclass(frozen=True)
class NoticeDeadline:
    """A contact or follow-up deadline is coming due: tell the partner (the deadline scheduler)."""

    deadline_id: str


@dataclass(frozen=True)
class RemindDeadline:
    """An overdue deadline is still unmet `remind_every` after the last reminder: tell the partner again."""

    deadline_id: str


@dataclass(frozen=True)
class EscalateDeadline:
    """An overdue deadline stayed unmet through `escalate_after` reminders: it goes to the supervisors."""

    deadline_id: str


@dataclass(frozen=True)
class MeetDeadline:
    """What the deadline waited for happened (an answer, a contact), or the assignment ended."""

    deadline_id: str


@dataclass(frozen=True)
class CancelDeadline:
    """The assignment was pulled back: nobody is expected to act any more."""

    deadline_id: str


ReferralCommand = WithdrawConsent | WithdrawReferral | ReopenReferral
AssignmentCommand = (
    AcceptAssignment | DeclineAssignment | RecordFollowUp | CloseAssignment | ExpireOffer | WithdrawAssignment
)
DeadlineCommand = FireDeadline | NoticeDeadline | RemindDeadline | EscalateDeadline | MeetDeadline | CancelDeadline
