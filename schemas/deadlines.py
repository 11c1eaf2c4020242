"""Overdue deadlines, as supervisors read them."""

from marshmallow import Schema, fields, validate

from referral_service.domain.model import RISK_LEVELS

# The kinds of deadline rows (the policy's `followup_every` interval makes `followup` rows).
DEADLINE_KINDS = ("accept", "first_contact", "followup")


class OverdueDeadlineSchema(Schema):
    id = fields.String(required=True)
    referral_id = fields.String(required=True)
    assignment_id = fields.String(required=True, allow_none=True)
    partner_id = fields.String(required=True, allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(DEADLINE_KINDS))
    due_at = fields.DateTime(required=True)
    risk_level = fields.String(required=True, validate=validate.OneOf(RISK_LEVELS))


class OverduePageSchema(Schema):
    items = fields.List(
        fields.Nested(OverdueDeadlineSchema), required=True, metadata={"description": "riskiest first, then oldest"}
    )
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})
