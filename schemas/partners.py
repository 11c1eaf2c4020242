from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from referral_service.domain.geography import UnknownPlace, districts, provinces
from referral_service.domain.model import LANGUAGES, NETWORKS, SERVICES
from referral_service.domain.text import has_control


def _no_control(name: str) -> None:
    # A name is shown on pages, in e-mail and on the operator's import lines, one line each.
    if has_control(name):
        raise ValidationError("no control characters")


_ID = validate.Regexp(r"^[a-z0-9][a-z0-9_-]{1,62}$", error="lower-case letters, digits, - and _ (2-63 chars)")


class PartnerSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=_ID)
    name = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=200),
            _no_control,
        ],
    )
    networks = fields.List(fields.String(validate=validate.OneOf(NETWORKS)), load_default=list)
    services = fields.List(
        fields.String(validate=validate.OneOf(SERVICES)), required=True, validate=validate.Length(min=1)
    )
    provinces = fields.List(fields.String(), load_default=list)
    districts = fields.List(fields.String(), load_default=list)
    languages = fields.List(fields.String(validate=validate.OneOf(LANGUAGES)), load_default=list)
    # strict: 1.5 or "10" is a mistake to report, not a number to round.
    capacity = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=100000))
    accepts_minors = fields.Boolean(load_default=False)
    staff_sex = fields.List(fields.String(validate=validate.OneOf(("female", "male"))), load_default=list)
    active = fields.Boolean(load_default=True)
    # Left out, they stay as they were (a re-import without an address keeps the one set by hand).
    contact_email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    notify_language = fields.String(validate=validate.OneOf(("en", "ur")))

    @validates_schema
    def _places(self, data: dict, **_: object) -> None:
        canon_p = {p.casefold(): p for p in provinces()}
        out_p = []
        for p in data.get("provinces", []):
            if p.casefold() not in canon_p:
                raise ValidationError("unknown province", "provinces")
            out_p.append(canon_p[p.casefold()])
        canon_d = {d.casefold(): d for d in districts()}
        out_d = []
        for d in data.get("districts", []):
            if d.casefold() not in canon_d:
                raise ValidationError(f"unknown district {d!r}"[:120], "districts")
            out_d.append(canon_d[d.casefold()])
        if not out_p and not out_d:
            raise ValidationError("name at least one province or district", "provinces")
        data["provinces"], data["districts"] = out_p, out_d


class PartnerViewSchema(Schema):
    """A partner organisation as the directory shows it (every field, always)."""

    id = fields.String(required=True)
    name = fields.String(required=True)
    networks = fields.List(fields.String(validate=validate.OneOf(NETWORKS)), required=True)
    services = fields.List(fields.String(validate=validate.OneOf(SERVICES)), required=True)
    provinces = fields.List(fields.String(), required=True)
    districts = fields.List(fields.String(), required=True)
    languages = fields.List(fields.String(validate=validate.OneOf(LANGUAGES)), required=True)
    capacity = fields.Integer(required=True)
    accepts_minors = fields.Boolean(required=True)
    staff_sex = fields.List(fields.String(validate=validate.OneOf(("female", "male"))), required=True)
    active = fields.Boolean(required=True)
    contact_email = fields.String(allow_none=True, metadata={"description": "the organisation's contact address"})
    notify_language = fields.String(metadata={"description": "language of its e-mail notices, en or ur"})


class PartnerPageSchema(Schema):
    items = fields.List(fields.Nested(PartnerViewSchema), required=True)
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})


__all__ = ["PartnerPageSchema", "PartnerSchema", "PartnerViewSchema", "UnknownPlace"]
