"""The one error body of the API: `{"error": {"code", "message", "fields"}}`."""

from marshmallow import Schema, fields


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    # "fields" would shadow Schema.fields; data_key keeps the wire name of the contract.
    field_errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        data_key="fields",
        required=True,
        metadata={
            "description": "what is wrong with each field, by name (nested as the body is); empty when no field is "
            "to blame"
        },
    )


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
