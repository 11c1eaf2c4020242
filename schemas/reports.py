"""Reports: the SLA per partner and risk level, and suppressed aggregate statistics."""

from marshmallow import Schema, fields, validate

from referral_service.domain.model import RISK_LEVELS
from referral_service.domain.statistics import DIMENSIONS


class SlaRowSchema(Schema):
    partner_id = fields.String(required=True)
    risk_level = fields.String(required=True, validate=validate.OneOf(RISK_LEVELS))
    offered = fields.Integer(required=True)
    accepted = fields.Integer(required=True)
    declined = fields.Integer(required=True)
    expired = fields.Integer(required=True)
    median_hours_to_accept = fields.Float(required=True, allow_none=True)
    p90_hours_to_accept = fields.Float(required=True, allow_none=True)
    median_hours_to_first_contact = fields.Float(required=True, allow_none=True)
    p90_hours_to_first_contact = fields.Float(required=True, allow_none=True)
    deadlines_met = fields.Integer(required=True, metadata={"description": "due in the period, met in time"})
    deadlines_missed = fields.Integer(required=True, metadata={"description": "due in the period, missed"})
    declines_by_reason = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    open = fields.Integer(required=True, metadata={"description": "cases offered to or held by the partner now"})


class SlaReportSchema(Schema):
    class Meta:
        ordered = True

    from_ = fields.Date(required=True, data_key="from", attribute="from")
    to = fields.Date(required=True)
    rows = fields.List(fields.Nested(SlaRowSchema), required=True)


class StatisticsCellSchema(Schema):
    """A cell names its value for each dimension of the query; `count` is null when suppressed."""

    count = fields.Integer(required=True, allow_none=True)
    suppressed = fields.Boolean(required=True)
    province = fields.String()
    district = fields.String()
    need = fields.String()
    risk_level = fields.String()
    sex = fields.String()
    age_band = fields.String()
    month = fields.String(metadata={"description": "YYYY-MM"})
    status = fields.String()


class StatisticsSchema(Schema):
    by = fields.List(fields.String(validate=validate.OneOf(DIMENSIONS)), required=True)
    from_ = fields.Date(required=True, data_key="from", attribute="from")
    to = fields.Date(required=True)
    threshold = fields.Integer(required=True, metadata={"description": "counts under this are suppressed"})
    total = fields.Integer(required=True, allow_none=True)
    cells = fields.List(fields.Nested(StatisticsCellSchema), required=True)
