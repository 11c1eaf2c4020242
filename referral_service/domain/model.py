"""Vocabulary of the domain: roles, statuses, taxonomies. Values here are part of the contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Role(StrEnum):
    CASEWORKER = "caseworker"
    SUPERVISOR = "supervisor"
    PARTNER = "partner"
    AUDITOR = "auditor"
    ADMIN = "admin"
    ANALYST = "analyst"  # the Policy Support Network: aggregate statistics only, never a record or an id


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


class DeadlineKind(StrEnum):
    ACCEPT = "accept"  # answer the offer
    FIRST_CONTACT = "first_contact"  # reach the person after accepting
    FOLLOWUP = "followup"  # the next follow-up after the last one


class DeadlineStatus(StrEnum):
    PENDING = "pending"  # not due yet
    FIRED = "fired"  # an accept deadline that came due (the offer expired, if still unanswered)
    OVERDUE = "overdue"  # a contact or follow-up deadline that came due unmet
    MET = "met"  # done in time or late, or made moot by a decline or close
    CANCELLED = "cancelled"  # its assignment was withdrawn with the referral or the consent


# Age at referral, in the bands the statistics count by (GBVIMS-style: children split from adults).
AGE_BANDS = ("0-11", "12-17", "18-24", "25-34", "35-49", "50+")
UNKNOWN = "unknown"  # a statistics value for what was not entered (or was erased)


def age_band(date_of_birth: date | None, on: date) -> str | None:
    """The band of the age on `on` (the day of referral); None when no date of birth was entered."""
    if date_of_birth is None:
        return None
    years = on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))
    for band, upper in zip(AGE_BANDS, (12, 18, 25, 35, 50), strict=False):
        if years < upper:
            return band
    return AGE_BANDS[-1]


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

# A partner organisation's fields besides its `id`, as the API's partner object names them: what the
# directory stores and shows, and what tells a partner object from an HSDS organization in an import.
PARTNER_FIELDS = (
    "name",
    "networks",
    "services",
    "provinces",
    "districts",
    "languages",
    "capacity",
    "accepts_minors",
    "staff_sex",
    "active",
    "contact_email",
    "notify_language",
)

# Which personal fields each consent scope releases to a partner holding the case.
SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "contact": ("full_name", "phone", "address"),
    "identity": ("cnic", "date_of_birth"),
    "incident": ("incident",),
}
PERSONAL_SUBJECT_FIELDS = ("full_name", "date_of_birth", "sex", "cnic", "phone", "address")


@dataclass(frozen=True)
class Actor:
    """Who is asking; every service call takes one, and the access policy (`domain/access.py`) judges it."""

    user_id: str
    role: Role
    partner_id: str | None = None
    name: str = ""


@dataclass(frozen=True)
class SubjectInput:
    """The person as the caseworker entered them, before anything is sealed."""

    full_name: str
    province: str
    district: str
    date_of_birth: date | None = None
    sex: str | None = None
    cnic: str | None = None
    phone: str | None = None
    address: str | None = None
    preferred_language: str | None = None

    def personal(self) -> dict[str, str | None]:
        return {
            "full_name": self.full_name,
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
            "sex": self.sex,
            "cnic": self.cnic,
            "phone": self.phone,
            "address": self.address,
        }
