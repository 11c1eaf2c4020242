"""The audit log for auditors: query filters, entries, access reports, verification and RFC 9162 proofs."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from referral_service.audit.log import AuditFilter
from referral_service.domain.access import Outcome
from referral_service.services.common import MAX_CURSOR_CHARS, MAX_LIMIT

# Ids and action codes the log records are short and plain; anything else is not a filter.
_ID = validate.Length(min=1, max=100)
_ACTION = validate.Regexp(r"^[a-z][a-z0-9_.]{0,63}$", error="an action code such as referral.read")
_OUTCOME = validate.OneOf(tuple(Outcome))
_TREE_INDEX = validate.Range(min=0, max=2**63 - 1)
_TREE_SIZE = validate.Range(min=1, max=2**63 - 1)


class Base64Bytes(fields.Field):
    """Raw bytes written as standard base64 (the hashes of RFC 9162, as the checkpoint writes them)."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        return base64.b64encode(bytes(value)).decode("ascii")


class AuditFilterSchema(Schema):
    """What an auditor may filter on; an unknown parameter is refused (a typo must not widen the query)."""

    class Meta:
        unknown = RAISE

    referral_id = fields.String(validate=_ID)
    subject_id = fields.String(validate=_ID)
    actor_id = fields.String(validate=_ID)
    action = fields.String(validate=_ACTION)
    since = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "from this time (inclusive)"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "before this time (exclusive)"})

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("must be after since", "until")


FILTER_NAMES = ("referral_id", "subject_id", "actor_id", "action", "since", "until")


def audit_filter(args: Mapping[str, Any]) -> AuditFilter:
    """The log's filter from loaded `AuditFilterSchema` (or `AuditQuerySchema`) data."""
    return AuditFilter(**{name: args[name] for name in FILTER_NAMES if args.get(name) is not None})


class AuditQuerySchema(AuditFilterSchema):
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(validate=validate.Length(max=MAX_CURSOR_CHARS))


class InclusionQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    index = fields.Integer(required=True, strict=False, validate=_TREE_INDEX)
    size = fields.Integer(required=True, strict=False, validate=_TREE_SIZE)


class ConsistencyQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    first = fields.Integer(required=True, validate=_TREE_SIZE)
    second = fields.Integer(required=True, validate=_TREE_SIZE)

    @validates_schema
    def _order(self, data: dict[str, Any], **_: Any) -> None:
        if "first" in data and "second" in data and data["first"] > data["second"]:
            raise ValidationError("must not be smaller than first", "second")


class AuditEntrySchema(Schema):
    id = fields.String(required=True)
    at = fields.DateTime(required=True)
    index = fields.Integer(
        required=True, allow_none=True, metadata={"description": "0-based position in the log; null until sequenced"}
    )
    leaf_hash = fields.String(
        required=True, metadata={"description": "base64 RFC 9162 leaf hash of the entry's stored bytes"}
    )
    actor_id = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, allow_none=True)
    partner_id = fields.String(required=True, allow_none=True)
    action = fields.String(required=True, allow_none=True)
    referral_id = fields.String(required=True, allow_none=True)
    subject_id = fields.String(required=True, allow_none=True)
    outcome = fields.String(required=True, allow_none=True, validate=_OUTCOME)
    request_id = fields.String(required=True, allow_none=True)
    purpose = fields.String(required=True, allow_none=True)
    details = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        required=True,
        allow_none=True,
        metadata={"description": "decrypted: which fields were seen, and fixed codes; null when erased or damaged"},
    )
    details_erased = fields.Boolean(
        required=True, metadata={"description": "the subject was erased: the details are gone"}
    )
    damaged = fields.Boolean(
        required=True, metadata={"description": "the stored entry does not open: it was changed or its key is damaged"}
    )


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True, metadata={"description": "newest first"})
    next = fields.String(required=True, allow_none=True, metadata={"description": "cursor of the next page"})


class AccessReportItemSchema(Schema):
    at = fields.DateTime(required=True)
    index = fields.Integer(required=True, allow_none=True)
    actor_id = fields.String(required=True, allow_none=True)
    actor_name = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, allow_none=True)
    partner_id = fields.String(required=True, allow_none=True)
    action = fields.String(required=True, allow_none=True)
    outcome = fields.String(required=True, allow_none=True, validate=_OUTCOME)
    referral_id = fields.String(required=True, allow_none=True)
    fields_ = fields.List(
        fields.String(),
        data_key="fields",
        attribute="fields",
        required=True,
        metadata={"description": "which personal fields"},
    )
    details_erased = fields.Boolean(required=True)
    damaged = fields.Boolean(required=True)


class AccessReportSchema(Schema):
    referral_id = fields.String(required=True, allow_none=True)
    subject_id = fields.String(required=True, allow_none=True)
    items = fields.List(
        fields.Nested(AccessReportItemSchema),
        required=True,
        metadata={"description": "every allowed or refused access, newest first"},
    )


def _head(report: Any) -> str:
    # The signed checkpoint the log was checked against; before the first one, the root itself.
    return report.head or base64.b64encode(report.root).decode("ascii")


class AuditVerifySchema(Schema):
    ok = fields.Boolean(required=True)
    entries = fields.Integer(required=True, metadata={"description": "sequenced entries recomputed"})
    head = fields.Function(
        _head,
        required=True,
        metadata={"type": "string", "description": "the latest signed checkpoint (C2SP signed note)"},
    )
    size = fields.Integer(required=True)
    root = Base64Bytes(required=True, metadata={"type": "string", "description": "base64 root hash recomputed"})
    first_bad = fields.Integer(
        required=True, allow_none=True, metadata={"description": "index of the first bad entry, when one is to blame"}
    )
    first_bad_id = fields.String(required=True, allow_none=True)
    problem = fields.String(required=True, allow_none=True)
    unsequenced = fields.Integer(required=True, metadata={"description": "entries not yet in the tree"})


class InclusionProofSchema(Schema):
    index = fields.Integer(required=True)
    size = fields.Integer(required=True)
    leaf_hash = fields.String(required=True, metadata={"description": "base64"})
    hashes = fields.List(fields.String(), required=True, metadata={"description": "base64, RFC 9162 order"})


class ConsistencyProofSchema(Schema):
    first = fields.Integer(required=True)
    second = fields.Integer(required=True)
    hashes = fields.List(fields.String(), required=True, metadata={"description": "base64, RFC 9162 order"})


# -- the CSV export ---------------------------------------------------------------------------------
CSV_COLUMNS = (
    "index",
    "id",
    "at",
    "actor_id",
    "role",
    "partner_id",
    "action",
    "referral_id",
    "subject_id",
    "outcome",
    "request_id",
    "purpose",
    "details",
    "details_erased",
    "damaged",
    "leaf_hash",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One cell as text a spreadsheet shows and never runs: a leading formula character gets a `'`."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def audit_csv(entries: Iterable[Mapping[str, Any]]) -> str:
    """Entries (as `AuditEntrySchema` dumps them) as CSV (RFC 4180, CRLF line ends), header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    dumper = AuditEntrySchema()
    for entry in entries:
        row = dumper.dump(entry)
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()
