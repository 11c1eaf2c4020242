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
    reminders = fields.Integer(required=True, metadata={"description": "overdue reminders sent so far"})
    escalated = fields.Boolean(required=True, metadata={"description": "escalated to the supervisors"})
    escalated_at = fields.DateTime(required=True, allow_none=True)
    overdue_seconds = fields.Integer(required=True, metadata={"description": "how long it is overdue"})


class OverduePageSchema(Schema):
    items = fields.List(
        fields.Nested(OverdueDeadlineSchema), required=True, metadata={"description": "riskiest first, then oldest"}
    )
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})


class RiskDeadlinesSchema(Schema):
    accept = fields.String(required=True, metadata={"description": "ISO-8601 duration to accept an offer"})
    first_contact = fields.String(required=True)
    followup_every = fields.String(required=True)
    remind_every = fields.String(required=True)
    escalate_after = fields.Integer(required=True)
    due_notice = fields.Float(required=True, metadata={"description": "fraction of the window: followup.due"})


class DeadlinePolicySchema(Schema):
    levels = fields.Dict(keys=fields.String(), values=fields.Nested(RiskDeadlinesSchema), required=True)
