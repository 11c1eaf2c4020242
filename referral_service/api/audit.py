"""The audit log for auditors: queries, CSV export, access reports, verification, checkpoints, proofs.

Every call is itself audited (by the service, in the transaction that reads the log), so a refused
caller and an auditor's filters are in the log too.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from referral_service.api import bp, current_actor, load, requires, services
from referral_service.api.openapi import PAGE, operation, query
from referral_service.domain.access import Action
from referral_service.services import audit
from schemas.audit import (
    AccessReportSchema,
    AuditFilterSchema,
    AuditPageSchema,
    AuditQuerySchema,
    AuditVerifySchema,
    ConsistencyProofSchema,
    ConsistencyQuerySchema,
    InclusionProofSchema,
    InclusionQuerySchema,
    audit_csv,
    audit_filter,
)

_AUDITORS = {403: "the audit log is for auditors"}
_ID_TEXT = {"type": "string", "minLength": 1, "maxLength": 100}
_TIME = {"type": "string", "format": "date-time"}
FILTERS = (
    query("referral_id", _ID_TEXT, "entries about this referral"),
    query("subject_id", _ID_TEXT, "entries about this person"),
    query("actor_id", _ID_TEXT, "entries of this user (the id `users create` printed)"),
    query("action", {"type": "string", "pattern": "^[a-z][a-z0-9_.]{0,63}$"}, "an action code, e.g. referral.read"),
    query("since", _TIME, "from this time, inclusive (ISO 8601; without an offset, UTC)"),
    query("until", _TIME, "before this time, exclusive (ISO 8601; without an offset, UTC)"),
)
_TREE_INT = {"type": "integer", "format": "int64"}
_NOT_IN_TREE = {404: "the log has no tree of that size, or the index is not in it"}


def _required(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**query(name, schema, description), "required": True}


@bp.get("/audit")
@operation(
    "Audit entries matching every given filter, newest first, decrypted (auditors)",
    response=AuditPageSchema,
    errors=_AUDITORS,
    parameters=(*FILTERS, *PAGE),
)
@requires(Action.READ_AUDIT)
def audit_query() -> Any:
    actor = current_actor()
    args = load(AuditQuerySchema(), request.args.to_dict())
    return audit.query(services(), actor, audit_filter(args), limit=args.get("limit"), cursor=args.get("cursor"))


@bp.get("/audit/export.csv")
@operation(
    "Every matching entry as CSV, for a spreadsheet (auditors); no cell starts a formula",
    response={"type": "string"},
    media_type="text/csv",
    errors=_AUDITORS,
    parameters=FILTERS,
)
@requires(Action.EXPORT_AUDIT)
def audit_export() -> Any:
    actor = current_actor()
    args = load(AuditFilterSchema(), request.args.to_dict())
    rows = audit.export_rows(services(), actor, audit_filter(args))
    return Response(
        audit_csv(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="audit-export.csv"'},
    )


@bp.get("/audit/referrals/<referral_id>/access")
@operation(
    "Who accessed this referral's record: every allowed or refused access, by whom, when, which fields (auditors)",
    response=AccessReportSchema,
    errors=_AUDITORS,
)
@requires(Action.READ_AUDIT)
def audit_referral_access(referral_id: str) -> Any:
    return audit.access_report(services(), current_actor(), referral_id=referral_id)


@bp.get("/audit/subjects/<subject_id>/access")
@operation(
    "What a person would be told on request: every access to their data, by whom, when, which fields (auditors)",
    response=AccessReportSchema,
    errors=_AUDITORS,
)
@requires(Action.READ_AUDIT)
def audit_subject_access(subject_id: str) -> Any:
    return audit.access_report(services(), current_actor(), subject_id=subject_id)


@bp.get("/audit/verify")
@operation(
    "Recompute the whole log against its latest signed checkpoint; name the first bad entry (auditors)",
    response=AuditVerifySchema,
    errors=_AUDITORS,
)
@requires(Action.VERIFY_AUDIT)
def audit_verify() -> Any:
    return audit.verify(services(), current_actor())


@bp.get("/audit/checkpoint")
@operation(
    "The latest signed checkpoint: a C2SP tlog-checkpoint in a signed note (auditors)",
    response={"type": "string"},
    media_type="text/plain",
    errors=_AUDITORS,
)
@requires(Action.VERIFY_AUDIT)
def audit_checkpoint() -> Any:
    return Response(audit.checkpoint(services(), current_actor()), mimetype="text/plain")


@bp.get("/audit/proof/inclusion")
@operation(
    "RFC 9162 inclusion proof of entry `index` in the tree of `size` (auditors)",
    response=InclusionProofSchema,
    errors={**_AUDITORS, **_NOT_IN_TREE},
    parameters=(
        _required("index", {**_TREE_INT, "minimum": 0}, "the entry's 0-based index"),
        _required("size", {**_TREE_INT, "minimum": 1}, "the tree size, as a checkpoint names it"),
    ),
)
@requires(Action.VERIFY_AUDIT)
def audit_inclusion_proof() -> Any:
    actor = current_actor()
    args = load(InclusionQuerySchema(), request.args.to_dict())
    return audit.inclusion_proof(services(), actor, args["index"], args["size"])


@bp.get("/audit/proof/consistency")
@operation(
    "RFC 9162 consistency proof between the trees of sizes `first` and `second` (auditors)",
    response=ConsistencyProofSchema,
    errors={**_AUDITORS, **_NOT_IN_TREE},
    parameters=(
        _required("first", {**_TREE_INT, "minimum": 1}, "the earlier tree size"),
        _required("second", {**_TREE_INT, "minimum": 1}, "the later tree size, at least `first`"),
    ),
)
@requires(Action.VERIFY_AUDIT)
def audit_consistency_proof() -> Any:
    actor = current_actor()
    args = load(ConsistencyQuerySchema(), request.args.to_dict())
    return audit.consistency_proof(services(), actor, args["first"], args["second"])
