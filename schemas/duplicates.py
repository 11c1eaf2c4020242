"""Possible duplicates: the decision body (empty for now) and the shapes supervisors read."""

from marshmallow import RAISE, Schema, fields


class DuplicateDecisionSchema(Schema):
    """Confirm and dismiss take no fields; a body, when sent, must be an empty object."""

    class Meta:
        unknown = RAISE


class DuplicateSubjectSchema(Schema):
    full_name = fields.String(allow_none=True)
    date_of_birth = fields.String(allow_none=True)
    district = fields.String()
    erased = fields.Boolean()
    damaged = fields.Boolean(metadata={"description": "the side's data key or a field does not open"})


class DuplicateSideSchema(Schema):
    id = fields.String()
    reference = fields.String()
    status = fields.String()
    caseworker_id = fields.String()
    created_at = fields.DateTime()
    subject_id = fields.String()
    subject = fields.Nested(DuplicateSubjectSchema)


class DuplicateDecisionResultSchema(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": ["pending", "confirmed", "dismissed"]})
    matched_on = fields.List(fields.String(metadata={"enum": ["cnic", "phone"]}))
    created_at = fields.DateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = fields.DateTime(allow_none=True)
    referral_id = fields.String()
    subject_id = fields.String()
    earlier_referral_id = fields.String()
    earlier_subject_id = fields.String()
    person_id = fields.String(allow_none=True, metadata={"description": "set once confirmed: one id per person"})


class DuplicateSchema(DuplicateDecisionResultSchema):
    referral = fields.Nested(DuplicateSideSchema, metadata={"description": "the later referral"})
    earlier_referral = fields.Nested(DuplicateSideSchema, metadata={"description": "the earliest referral it matched"})


class DuplicatePageSchema(Schema):
    items = fields.List(fields.Nested(DuplicateSchema))
    next = fields.String(allow_none=True)
