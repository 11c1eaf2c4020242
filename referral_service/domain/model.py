"""Vocabulary of the domain: roles, statuses, taxonomies. Values here are part of the contract."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CASEWORKER = "caseworker"
    SUPERVISOR = "supervisor"
    PARTNER = "partner"
    AUDITOR = "auditor"
    ADMIN = "admin"


class ReferralStatus(StrEnum):
    SUBMITTED = "submitted"
    ROUTING = "routing"
    ASSIGNED = "assigned"
    UNROUTABLE = "unroutable"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"


class AssignmentStatus(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"


OPEN_ASSIGNMENT_STATUSES = (AssignmentStatus.OFFERED, AssignmentStatus.ACCEPTED)

SERVICES = ("medical", "psychosocial", "legal_aid", "shelter", "livelihood", "financial", "education")
RISK_LEVELS = ("critical", "high", "medium", "low")  # riskiest first; order is used for sorting
SEXES = ("female", "male", "other", "undisclosed")
STAFF_SEX_PREFERENCES = ("female", "male", "any")
CONSENT_METHODS = ("verbal", "written")
SHARE_SCOPES = ("contact", "identity", "incident")
NETWORKS = ("victim_assistance", "policy_support", "communication_narratives", "youth_empowerment")
DECLINE_REASONS = ("no_capacity", "out_of_area", "service_not_offered", "cannot_contact", "other")
CLOSE_OUTCOMES = ("services_delivered", "referred_elsewhere", "client_declined", "cannot_contact", "other")
# A code, never free text: it is stored in plaintext and travels in followup.recorded events; what
# happened in the person's own words goes in the sealed note.
FOLLOWUP_OUTCOMES = ("contacted", "service_started", "service_delivered", "no_contact", "client_declined", "other")
LANGUAGES = ("ur", "en", "ps", "pa", "sd", "bal", "skr", "hnd", "bsk", "shi", "kas", "brh", "other")

# Which personal fields each consent scope releases to a partner holding the case.
SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "contact": ("full_name", "phone", "address"),
    "identity": ("cnic", "date_of_birth"),
    "incident": ("incident",),
}
PERSONAL_SUBJECT_FIELDS = ("full_name", "date_of_birth", "sex", "cnic", "phone", "address")


@dataclass(frozen=True)
class Actor:
    """Who is asking; every service call takes one so it can check role and ownership."""

    user_id: str
    role: Role
    partner_id: str | None = None
    name: str = ""

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.CASEWORKER, Role.SUPERVISOR)
