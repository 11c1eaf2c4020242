import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from referral_service.crypto import normalise_phone
from referral_service.crypto.blind_index import format_cnic
from referral_service.domain.geography import UnknownPlace, resolve_place
from referral_service.domain.model import (
    CLOSE_OUTCOMES,
    CONSENT_METHODS,
    DECLINE_REASONS,
    FOLLOWUP_OUTCOMES,
    LANGUAGES,
    RISK_LEVELS,
    SERVICES,
    SEXES,
    SHARE_SCOPES,
    STAFF_SEX_PREFERENCES,
    AssignmentStatus,
    ReferralStatus,
)
from schemas.fields import IsoDate

NARRATIVE_MAX = 5000
NOTE_MAX = 2000
NAME_WITHOUT_LETTERS = "must contain letters, not only spaces or invisible characters"


# Caseworkers date events in Pakistan time (UTC+5, no daylight saving). From 19:00 UTC it is already
# tomorrow there, so "today" in Karachi must not be refused as a future date.
PAKISTAN_TIME = timezone(timedelta(hours=5), "PKT")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _not_future(value: date) -> None:
    if value > utcnow().astimezone(PAKISTAN_TIME).date():
        raise ValidationError("must not be in the future")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class SubjectInputSchema(_Strict):
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    date_of_birth = fields.Date(load_default=None, allow_none=True, validate=_not_future)
    sex = fields.String(load_default="undisclosed", validate=validate.OneOf(SEXES))
    cnic = fields.String(load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True)
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    province = fields.String(load_default=None, allow_none=True)
    district = fields.String(required=True)
    preferred_language = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(LANGUAGES))

    @validates("full_name")
    def _name(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("must not be blank")
        # Zero-width spaces, direction overrides and the like pass strip() but show nothing: such a
        # "name" reads as blank on every page. Every name in every script has a letter (category L*).
        if not any(unicodedata.category(ch).startswith("L") for ch in value):
            raise ValidationError(NAME_WITHOUT_LETTERS)

    @validates("date_of_birth")
    def _dob(self, value: date | None, **_: Any) -> None:
        if value is not None and value.year < 1900:
            raise ValidationError("must be after 1900")

    # Run even when other fields failed, so a form shows every problem at once, not one per submit;
    # `data` then holds only the fields that deserialised.
    @validates_schema(skip_on_field_errors=False)
    def _normalise(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name, fn in (("cnic", format_cnic), ("phone", normalise_phone)):
            if data.get(name):
                try:
                    data[name] = fn(data[name])
                except ValueError as exc:
                    errors[name] = [str(exc)]
            else:
                data[name] = None
        if "district" in data:
            try:
                place = resolve_place(data.get("province"), data["district"])
                data["province"], data["district"] = place.province, place.district
            except UnknownPlace as exc:
                errors.setdefault(exc.field, []).append(exc.message)
        if errors:
            raise ValidationError(errors)
        if "full_name" in data:
            data["full_name"] = data["full_name"].strip()


class IncidentInputSchema(_Strict):
    type = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))
    date = fields.Date(load_default=None, allow_none=True, validate=_not_future)
    narrative = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=NARRATIVE_MAX))


class ConsentInputSchema(_Strict):
    given = fields.Boolean(required=True)
    method = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(CONSENT_METHODS))
    share = fields.List(fields.String(validate=validate.OneOf(SHARE_SCOPES)), load_default=list)

    @validates_schema
    def _method(self, data: dict[str, Any], **_: Any) -> None:
        if data["given"] and not data.get("method"):
            raise ValidationError("say how consent was given: verbal or written", "method")


class PreferencesInputSchema(_Strict):
    staff_sex = fields.String(load_default="any", validate=validate.OneOf(STAFF_SEX_PREFERENCES))


class ReferralInputSchema(_Strict):
    subject = fields.Nested(SubjectInputSchema, required=True)
    incident = fields.Nested(IncidentInputSchema, load_default=dict)
    needs = fields.List(
        fields.String(validate=validate.OneOf(SERVICES)),
        required=True,
        validate=validate.Length(min=1, error="name at least one need"),
    )
    risk_level = fields.String(required=True, validate=validate.OneOf(RISK_LEVELS))
    consent = fields.Nested(ConsentInputSchema, required=True)
    preferences = fields.Nested(PreferencesInputSchema, load_default=dict)

    @post_load
    def _to_command(self, data: dict[str, Any], **_: Any) -> Any:
        from referral_service.domain.commands import SubmitReferral
        from referral_service.domain.model import SubjectInput

        s = data["subject"]
        incident = data.get("incident") or {}
        consent = data["consent"]
        return SubmitReferral(
            subject=SubjectInput(
                full_name=s["full_name"],
                province=s["province"],
                district=s["district"],
                date_of_birth=s.get("date_of_birth"),
                sex=s.get("sex"),
                cnic=s.get("cnic"),
                phone=s.get("phone"),
                address=s.get("address"),
                preferred_language=s.get("preferred_language"),
            ),
            needs=data["needs"],
            risk_level=data["risk_level"],
            consent_given=consent["given"],
            consent_method=consent.get("method"),
            consent_share=consent.get("share") or [],
            incident_type=incident.get("type"),
            incident_date=incident.get("date"),
            incident_narrative=incident.get("narrative"),
            staff_sex_preference=(data.get("preferences") or {}).get("staff_sex", "any"),
        )


class DeclineSchema(_Strict):
    reason = fields.String(required=True, validate=validate.OneOf(DECLINE_REASONS))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=NOTE_MAX))

    @validates_schema
    def _other(self, data: dict[str, Any], **_: Any) -> None:
        if data["reason"] == "other" and not (data.get("note") or "").strip():
            raise ValidationError("explain 'other' in a note", "note")


class FollowUpSchema(_Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(FOLLOWUP_OUTCOMES))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=NOTE_MAX))


class CloseSchema(_Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(CLOSE_OUTCOMES))
    services_delivered = fields.List(fields.String(validate=validate.OneOf(SERVICES)), load_default=list)
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=NOTE_MAX))


class WithdrawSchema(_Strict):
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=NOTE_MAX))


class ReopenSchema(_Strict):
    note = fields.String(required=True, validate=validate.Length(min=1, max=NOTE_MAX))


# -- responses ------------------------------------------------------------------------------------
# What the handlers answer, field by field: the OpenAPI document is built from these, and
# tests/e2e/test_openapi_document.py checks real answers against it. `required` here means "always
# present in the answer"; objects are closed (marshmallow's default `unknown = RAISE` becomes
# `additionalProperties: false`), so a field a handler adds must be described here first.
def _one_of(values: Any) -> validate.OneOf:
    return validate.OneOf([str(v) for v in values])


_REFERRAL_STATUS = _one_of(ReferralStatus)
_ASSIGNMENT_STATUS = _one_of(AssignmentStatus)
_RISK = _one_of(RISK_LEVELS)
_SERVICE = _one_of(SERVICES)


def _assignment_status() -> fields.String:
    return fields.String(required=True, validate=_ASSIGNMENT_STATUS)


class AssignmentSchema(Schema):
    id = fields.String(required=True)
    referral_id = fields.String(required=True)
    partner_id = fields.String(required=True)
    service = fields.String(required=True, validate=_SERVICE)
    status = _assignment_status()
    offered_at = fields.DateTime(required=True)
    responded_at = fields.DateTime(required=True, allow_none=True)
    reasons = fields.List(
        fields.String(), required=True, metadata={"description": "why this partner was chosen, as readable sentences"}
    )
    decline_reason = fields.String(required=True, allow_none=True, validate=_one_of(DECLINE_REASONS))
    close_outcome = fields.String(required=True, allow_none=True, validate=_one_of(CLOSE_OUTCOMES))
    services_delivered = fields.List(fields.String(validate=_SERVICE), required=True, allow_none=True)
    closed_at = fields.DateTime(required=True, allow_none=True)


_NOTE_DAMAGED = fields.Boolean(
    metadata={
        "description": "present (true) when the note is stored but does not open: a damaged record; `note` is then null"
    }
)


class FollowUpViewSchema(Schema):
    id = fields.String(required=True)
    outcome = fields.String(required=True, validate=_one_of(FOLLOWUP_OUTCOMES))
    recorded_at = fields.DateTime(required=True)
    recorded_by = fields.String(required=True)
    note = fields.String(required=True, allow_none=True)
    note_damaged = _NOTE_DAMAGED


class AssignmentDetailSchema(AssignmentSchema):
    """An assignment inside a referral: with its sealed note and its follow-ups."""

    note = fields.String(required=True, allow_none=True)
    note_damaged = _NOTE_DAMAGED
    followups = fields.List(fields.Nested(FollowUpViewSchema), required=True)


class OpenDeadlineSchema(Schema):
    """What the partner must do next for an assignment, and by when."""

    kind = fields.String(required=True, metadata={"description": "accept, first_contact or followup"})
    due_at = fields.DateTime(required=True)
    state = fields.String(
        required=True, metadata={"description": "pending, due_soon (followup.due was sent) or overdue"}
    )
    reminders = fields.Integer(required=True, metadata={"description": "overdue reminders sent so far"})


class InboxItemSchema(AssignmentSchema):
    risk_level = fields.String(required=True, validate=_RISK)
    reference = fields.String(required=True)
    subject_damaged = fields.Boolean(
        required=True, metadata={"description": "the person's data key does not open (a damaged record)"}
    )
    next_deadline = fields.Nested(OpenDeadlineSchema, required=True, allow_none=True)


class AssignmentPageSchema(Schema):
    items = fields.List(fields.Nested(InboxItemSchema), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})


class SubjectViewSchema(Schema):
    # Personal fields: present only when this caller may see them (a partner: those its consent scopes release).
    full_name = fields.String(allow_none=True)
    date_of_birth = IsoDate(allow_none=True)
    sex = fields.String(allow_none=True, validate=_one_of(SEXES))
    cnic = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    province = fields.String(required=True)
    district = fields.String(required=True)
    preferred_language = fields.String(required=True, allow_none=True, validate=_one_of(LANGUAGES))
    is_minor = fields.Boolean(required=True, allow_none=True)
    erased = fields.Boolean(
        required=True, metadata={"description": "the subject was erased: every personal field reads null"}
    )
    damaged = fields.Boolean(
        required=True,
        metadata={
            "description": "true when some stored personal field (or the person's data key) does not open: a damaged "
            "record; those fields read null"
        },
    )
    damaged_fields = fields.List(
        fields.String(),
        metadata={"description": "present when `damaged`: the fields that read null because they are damaged"},
    )


class IncidentViewSchema(Schema):
    type = fields.String(required=True, allow_none=True)
    date = IsoDate(allow_none=True)
    narrative = fields.String(allow_none=True)
    erased = fields.Boolean(metadata={"description": "present (true) when the subject was erased"})
    damaged = fields.Boolean(metadata={"description": "present (true) when the sealed incident does not open"})


class PreferencesViewSchema(Schema):
    staff_sex = fields.String(required=True, validate=_one_of(STAFF_SEX_PREFERENCES))


class ConsentViewSchema(Schema):
    given = fields.Boolean(required=True)
    method = fields.String(required=True, allow_none=True, validate=_one_of(CONSENT_METHODS))
    share = fields.List(fields.String(validate=_one_of(SHARE_SCOPES)), required=True)
    recorded_by = fields.String(required=True)
    recorded_at = fields.DateTime(required=True)
    withdrawn_at = fields.DateTime(required=True, allow_none=True)


class ConsideredPartnerSchema(Schema):
    partner_id = fields.String(required=True)
    verdict = fields.String(required=True, validate=validate.OneOf(("chosen", "eligible", "skipped")))
    reasons = fields.List(fields.String(), required=True)
    score = fields.Float(required=True, allow_none=True)


class RoutingDecisionSchema(Schema):
    service = fields.String(required=True, validate=_SERVICE)
    chosen_partner_id = fields.String(required=True, allow_none=True)
    considered = fields.List(fields.Nested(ConsideredPartnerSchema), required=True)
    decided_at = fields.DateTime(required=True)


class LinkedReferralSchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=_REFERRAL_STATUS)


class ReferralSchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True, metadata={"description": "readable, e.g. VAN-2026-000123"})
    status = fields.String(required=True, validate=_REFERRAL_STATUS)
    risk_level = fields.String(required=True, validate=_RISK)
    needs = fields.List(fields.String(validate=_SERVICE), required=True)
    subject_id = fields.String(required=True)
    subject = fields.Nested(SubjectViewSchema, required=True)
    preferences = fields.Nested(PreferencesViewSchema, required=True)
    created_at = fields.DateTime(required=True)
    assignments = fields.List(
        fields.Nested(AssignmentDetailSchema), required=True, metadata={"description": "a partner sees only its own"}
    )
    incident = fields.Nested(
        IncidentViewSchema,
        metadata={
            "description": "present for its caseworker, supervisors and a partner whose consent scopes include it"
        },
    )
    # Its caseworker and supervisors only:
    consent = fields.Nested(ConsentViewSchema)
    caseworker_id = fields.String()
    routing_decisions = fields.List(fields.Nested(RoutingDecisionSchema))
    linked_referrals = fields.List(
        fields.Nested(LinkedReferralSchema),
        metadata={
            "description": "supervisors only: the other referrals of the same person (links a supervisor confirmed)"
        },
    )


class ListedSubjectSchema(Schema):
    full_name = fields.String(required=True, allow_none=True)
    erased = fields.Boolean(required=True)
    damaged = fields.Boolean(required=True)
    district = fields.String(required=True)


class ReferralSummarySchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=_REFERRAL_STATUS)
    risk_level = fields.String(required=True, validate=_RISK)
    needs = fields.List(fields.String(validate=_SERVICE), required=True)
    subject_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    subject = fields.Nested(ListedSubjectSchema, required=True)
    consent_given = fields.Boolean(required=True)
    assignments = fields.List(fields.Nested(AssignmentSchema), required=True)


class ReferralPageSchema(Schema):
    items = fields.List(fields.Nested(ReferralSummarySchema), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})


class RepeatReferralWarningSchema(Schema):
    code = fields.String(required=True, validate=validate.OneOf(("possible_repeat_referral",)))
    message = fields.String(required=True)
    matched_on = fields.List(fields.String(validate=validate.OneOf(("cnic", "phone"))), required=True)
    earlier_references = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "only referrals the submitter may already see, oldest first"},
    )


class SubmittedSchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=_REFERRAL_STATUS)
    subject_id = fields.String(required=True)
    routing = fields.String(required=True, metadata={"description": "whether it will be routed, in words"})
    warnings = fields.List(fields.Nested(RepeatReferralWarningSchema), required=True)


class ReferralStateSchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=_REFERRAL_STATUS)


class ConsentWithdrawnSchema(ReferralStateSchema):
    consent_withdrawn_at = fields.DateTime(required=True)


class FollowUpRecordedSchema(Schema):
    id = fields.String(required=True)
    assignment_id = fields.String(required=True)
    outcome = fields.String(required=True, validate=_one_of(FOLLOWUP_OUTCOMES))
    recorded_at = fields.DateTime(required=True)
