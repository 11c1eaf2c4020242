"""The OpenAPI 3 document, built by apispec from the marshmallow schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from referral_service import __version__
from schemas import (
    AssignmentSchema,
    CloseSchema,
    DeclineSchema,
    DuplicateDecisionResultSchema,
    DuplicateDecisionSchema,
    DuplicatePageSchema,
    DuplicateSchema,
    DuplicateSideSchema,
    ErrorSchema,
    FollowUpSchema,
    PartnerSchema,
    ReferralInputSchema,
    ReferralSchema,
    SubmittedSchema,
)

_ERR = {"description": "error", "content": {"application/json": {"schema": "Error"}}}


def _op(summary: str, ok_schema: str | None = None, body: str | None = None, status: str = "200",
        params: list[dict[str, Any]] | None = None, auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        status: {"description": "success", **({"content": {"application/json": {"schema": ok_schema}}}
                                               if ok_schema else {})},
        "400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR, "409": _ERR, "422": _ERR,
        # after too many failed authentications from one address; with Retry-After
        "429": _ERR,
    }}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_LIST_PARAMS = [
    {"name": "status", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]


@cache
def build_spec() -> dict[str, Any]:
    spec = APISpec(title="referral-service", version=__version__, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()], info={"description": "Victim Assistance Network referrals"})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in {
        # Nested schemas first: the plugin registers a nested schema under its own name on first sight.
        "Error": ErrorSchema, "Assignment": AssignmentSchema, "ReferralInput": ReferralInputSchema,
        "Referral": ReferralSchema, "Submitted": SubmittedSchema, "Decline": DeclineSchema,
        "FollowUp": FollowUpSchema, "Close": CloseSchema, "Partner": PartnerSchema,
        "DuplicateSide": DuplicateSideSchema, "Duplicate": DuplicateSchema, "DuplicatePage": DuplicatePageSchema,
        "DuplicateDecision": DuplicateDecisionSchema, "DuplicateDecisionResult": DuplicateDecisionResultSchema,
    }.items():
        spec.components.schema(name, schema=schema)
    idem = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}}
    aid = [_path("assignment_id")]
    spec.path("/api/v1/referrals", operations={
        "post": _op("Submit a referral", "Submitted", "ReferralInput", "201", [idem]),
        "get": _op("List referrals (own, or all for supervisors)", params=_LIST_PARAMS),
    })
    spec.path("/api/v1/referrals/{referral_id}", operations={
        "get": _op("One referral, as this caller may see it", "Referral", params=[_path("referral_id")])})
    spec.path("/api/v1/referrals/{referral_id}/consent/withdraw", operations={
        "post": _op("Withdraw consent: offers pulled back, partners lose access", params=[_path("referral_id")])})
    spec.path("/api/v1/assignments", operations={"get": _op("Assignment inbox", params=_LIST_PARAMS)})
    spec.path("/api/v1/assignments/{assignment_id}/accept", operations={
        "post": _op("Accept an offered case", "Assignment", params=aid)})
    spec.path("/api/v1/assignments/{assignment_id}/decline", operations={
        "post": _op("Decline; the case is routed onward", "Assignment", "Decline", params=aid)})
    spec.path("/api/v1/assignments/{assignment_id}/followups", operations={
        "post": _op("Record a follow-up", None, "FollowUp", "201", params=aid)})
    spec.path("/api/v1/assignments/{assignment_id}/close", operations={
        "post": _op("Close with an outcome", "Assignment", "Close", params=aid)})
    spec.path("/api/v1/partners", operations={
        "get": _op("Partner directory"),
        "post": _op("Create or update a partner (admin)", "Partner", "Partner", "201"),
    })
    spec.path("/api/v1/deadlines/overdue", operations={"get": _op("Overdue deadlines, riskiest first")})
    dup_status = {"name": "status", "in": "query",
                  "schema": {"type": "string", "enum": ["pending", "confirmed", "dismissed"], "default": "pending"}}
    spec.path("/api/v1/duplicates", operations={"get": _op(
        "Possible duplicate people (a CNIC or phone matching an earlier subject), oldest first (supervisors)",
        "DuplicatePage", params=[dup_status, *_LIST_PARAMS[1:]])})
    for verb, what in (("confirm", "Confirm: link both people as one (supervisors); no data moves between "
                                   "referrals"),
                       ("dismiss", "Dismiss: keep the two people apart (supervisors)")):
        decision = _op(what, "DuplicateDecisionResult", params=[_path("duplicate_id")])
        decision["requestBody"] = {"required": False,
                                   "content": {"application/json": {"schema": "DuplicateDecision"}}}
        spec.path(f"/api/v1/duplicates/{{duplicate_id}}/{verb}", operations={"post": decision})
    spec.path("/api/v1/openapi.json", operations={"get": _op("This document", auth=False)})
    doc = spec.to_dict()
    doc["security"] = [{"bearer": []}]
    return doc
