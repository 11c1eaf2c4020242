"""Deliveries of notifications to a partner (webhooks, e-mail), as admins see them: ids and statuses only."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

CHANNELS = ("webhook", "email", "digest")
DELIVERY_STATUSES = ("pending", "delivered", "parked")


class DeliverySchema(Schema):
    id = fields.String(required=True, metadata={"description": "the webhook-id, the same on every retry"})
    partner_id = fields.String(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    event_type = fields.String(required=True)
    event_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer(required=True)
    last_status = fields.Integer(allow_none=True, metadata={"description": "the receiver's last HTTP status"})
    last_error = fields.String(allow_none=True, metadata={"description": "why the last attempt failed"})
    created_at = fields.DateTime(required=True)
    last_attempt_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "always null: the most recent only"})
