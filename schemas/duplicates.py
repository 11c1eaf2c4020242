"""Possible duplicates: the decision body (empty for now) and the shapes supervisors read."""

from marshmallow import RAISE, Schema, fields, validate

from referral_service.domain.duplicates import DuplicateStatus
from referral_service.domain.model import ReferralStatus
from schemas.fields import IsoDate

_STATUS = validate.OneOf([s.value for s in DuplicateStatus])


class DuplicateDecisionSchema(Schema):
    """Confirm and dismiss take no fields; a body, when sent, must be an empty object."""

    class Meta:
        unknown = RAISE


class DuplicateSubjectSchema(Schema):
    full_name = fields.String(required=True, allow_none=True)
    date_of_birth = IsoDate(required=True, allow_none=True)
    district = fields.String(required=True)
    erased = fields.Boolean(required=True)
    damaged = fields.Boolean(required=True, metadata={"description": "the side's data key or a field does not open"})
    damaged_fields = fields.List(fields.String(), metadata={"description": "present when `damaged`"})


class DuplicateSideSchema(Schema):
    id = fields.String(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in ReferralStatus]))
    caseworker_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    subject_id = fields.String(required=True)
    subject = fields.Nested(DuplicateSubjectSchema, required=True)


class DuplicateDecisionResultSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=_STATUS)
    matched_on = fields.List(fields.String(validate=validate.OneOf(("cnic", "phone"))), required=True)
    created_at = fields.DateTime(required=True)
    decided_by = fields.String(required=True, allow_none=True)
    decided_at = fields.DateTime(required=True, allow_none=True)
    referral_id = fields.String(required=True)
    subject_id = fields.String(required=True)
    earlier_referral_id = fields.String(required=True)
    earlier_subject_id = fields.String(required=True)
    person_id = fields.String(
        required=True, allow_none=True, metadata={"description": "set once confirmed: one id per person"}
    )


class DuplicateSchema(DuplicateDecisionResultSchema):
    referral = fields.Nested(DuplicateSideSchema, required=True, metadata={"description": "the later referral"})
    earlier_referral = fields.Nested(
        DuplicateSideSchema, required=True, metadata={"description": "the earliest referral it matched"}
    )


class DuplicatePageSchema(Schema):
    items = fields.List(fields.Nested(DuplicateSchema), required=True, metadata={"description": "oldest first"})
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})
