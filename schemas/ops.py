"""The operations endpoints' answers: liveness and readiness."""

from marshmallow import Schema, fields, validate

_CHECK = validate.OneOf(("ok", "unreachable"))


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok",)))


class ReadinessChecksSchema(Schema):
    database = fields.String(required=True, validate=_CHECK)
    broker = fields.String(required=True, validate=_CHECK)


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ready", "not_ready")))
    checks = fields.Nested(ReadinessChecksSchema, required=True)
