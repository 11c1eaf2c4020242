"""Commands: orders given to the service layer, each handled by one function."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from referral_service.services.personal_data import SubjectInput


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
class DeclineAssignment:
    assignment_id: str
    reason: str
    note: str | None = None


@dataclass(frozen=True)
class RecordFollowUp:
    assignment_id: str
    outcome: str
    note: str | None = None


@dataclass(frozen=True)
class CloseAssignment:
    assignment_id: str
    outcome: str
    note: str | None = None
    services_delivered: list[str] = field(default_factory=list)
