"""The document's content, built from the API blueprints alone (no database): schemas and parameters.

That every route is documented, and that real answers match, is checked against the whole app in
tests/e2e/test_openapi_document.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from referral_service.api import bp
from referral_service.api.openapi import build_spec, openapi_path
from referral_service.api.ops import ops_bp


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    app = Flask(__name__)
    app.register_blueprint(bp)
    app.register_blueprint(ops_bp)
    return build_spec(app)


def test_flask_rules_become_openapi_paths() -> None:
    assert openapi_path("/api/v1/referrals/<referral_id>/reopen") == "/api/v1/referrals/{referral_id}/reopen"
    assert openapi_path("/files/<path:name>") == "/files/{name}"
    assert openapi_path("/healthz") == "/healthz"


def test_request_and_error_schemas_come_from_the_marshmallow_schemas(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    assert set(schemas["ReferralInput"]["required"]) >= {"subject", "needs", "risk_level", "consent"}
    assert schemas["ReferralInput"]["additionalProperties"] is False  # unknown fields are refused
    error = schemas["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "fields"}
    assert schemas["Error"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}
    # The directory's input and its answer are two schemas.
    assert "capacity" in schemas["PartnerInput"]["required"] and "id" in schemas["Partner"]["required"]


def test_response_schemas_say_which_fields_are_always_there_and_which_may_be_null(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assignment = schemas["Assignment"]
    assert {"id", "referral_id", "partner_id", "service", "status", "offered_at", "reasons"} <= set(
        assignment["required"]
    )
    assert assignment["properties"]["responded_at"]["nullable"] is True
    assert assignment["properties"]["status"]["enum"] == [
        "offered",
        "accepted",
        "declined",
        "expired",
        "withdrawn",
        "closed",
    ]
    subject = schemas["SubjectView"]
    # A partner sees only the consented personal fields: they are optional, never required.
    assert "full_name" not in subject["required"] and {"district", "erased", "damaged"} <= set(subject["required"])
    page = schemas["ReferralPage"]
    assert set(page["required"]) == {"items", "next"} and page["properties"]["next"]["nullable"] is True


def test_openapi_documents_the_possible_duplicates_queue(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    item = schemas["Duplicate"]["properties"]
    assert {
        "id",
        "status",
        "matched_on",
        "created_at",
        "decided_by",
        "decided_at",
        "referral",
        "earlier_referral",
    } <= set(item)
    side = schemas["DuplicateSide"]["properties"]
    assert {"id", "reference", "status", "caseworker_id", "created_at", "subject"} <= set(side)
    listing = spec["paths"]["/api/v1/duplicates"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["schema"]["enum"] == ["pending", "confirmed", "dismissed"]
    assert {p["name"] for p in listing["parameters"]} == {"status", "limit", "cursor"}
    for verb in ("confirm", "dismiss"):
        op = spec["paths"][f"/api/v1/duplicates/{{duplicate_id}}/{verb}"]["post"]
        assert op["requestBody"]["required"] is False and "409" in op["responses"]


def test_list_parameters_carry_the_limits_the_handlers_enforce(spec: dict[str, Any]) -> None:
    listing = spec["paths"]["/api/v1/referrals"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert params["status"]["schema"]["enum"][0] == "submitted"
    submit = spec["paths"]["/api/v1/referrals"]["post"]
    key = next(p for p in submit["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["schema"]["maxLength"] == 200


def test_openapi_documents_the_audit_log_for_auditors(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    listing = paths["/api/v1/audit"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert names == {"referral_id", "subject_id", "actor_id", "action", "since", "until", "limit", "cursor"}
    since = next(p for p in listing["parameters"] if p["name"] == "since")
    assert since["schema"] == {"type": "string", "format": "date-time"}
    assert {"200", "401", "403", "422"} <= set(listing["responses"])
    entry = spec["components"]["schemas"]["AuditEntry"]
    assert {"id", "at", "actor_id", "role", "action", "referral_id", "outcome", "details", "index", "leaf_hash"} <= set(
        entry["required"]
    )
    assert entry["properties"]["outcome"]["enum"] == ["allowed", "denied", "conflict", None]  # null: a damaged entry
    assert entry["properties"]["index"]["nullable"] is True
    verify = spec["components"]["schemas"]["AuditVerify"]
    assert {"ok", "entries", "head", "size", "first_bad", "problem"} <= set(verify["required"])
    assert verify["properties"]["head"]["type"] == "string"
    checkpoint = paths["/api/v1/audit/checkpoint"]["get"]["responses"]["200"]["content"]
    assert checkpoint == {"text/plain": {"schema": {"type": "string"}}}
    export = paths["/api/v1/audit/export.csv"]["get"]
    assert "text/csv" in export["responses"]["200"]["content"]
    assert {p["name"] for p in export["parameters"]} == names - {"limit", "cursor"}
    inclusion = paths["/api/v1/audit/proof/inclusion"]["get"]
    assert {p["name"]: p["required"] for p in inclusion["parameters"]} == {"index": True, "size": True}
    assert {"200", "403", "404", "422"} <= set(inclusion["responses"])
    consistency = paths["/api/v1/audit/proof/consistency"]["get"]
    assert {p["name"] for p in consistency["parameters"]} == {"first", "second"}
    assert set(spec["components"]["schemas"]["InclusionProof"]["required"]) == {"index", "size", "leaf_hash", "hashes"}
    assert set(spec["components"]["schemas"]["ConsistencyProof"]["required"]) == {"first", "second", "hashes"}
    for kind, argument in (("referrals", "referral_id"), ("subjects", "subject_id")):
        report = paths[f"/api/v1/audit/{kind}/{{{argument}}}/access"]
        assert report["parameters"][0]["name"] == argument and "404" in report["get"]["responses"]
        assert report["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/AccessReport"
        }
