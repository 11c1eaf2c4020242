from __future__ import annotations

from typing import Any

from referral_service.api.openapi import build_spec


def test_openapi_document_lists_every_contract_path_and_schema() -> None:
    spec = build_spec()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/referrals", "/api/v1/referrals/{referral_id}", "/api/v1/assignments",
                 "/api/v1/assignments/{assignment_id}/accept", "/api/v1/assignments/{assignment_id}/decline",
                 "/api/v1/assignments/{assignment_id}/followups", "/api/v1/assignments/{assignment_id}/close",
                 "/api/v1/partners", "/api/v1/deadlines/overdue", "/api/v1/referrals/{referral_id}/consent/withdraw",
                 "/api/v1/duplicates", "/api/v1/duplicates/{duplicate_id}/confirm",
                 "/api/v1/duplicates/{duplicate_id}/dismiss"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    referral_input = schemas["ReferralInput"]
    assert set(referral_input["required"]) >= {"subject", "needs", "risk_level", "consent"}
    assert schemas["Error"]["properties"]["error"]



def test_openapi_documents_the_possible_duplicates_queue() -> None:
    spec = build_spec()
    schemas = spec["components"]["schemas"]
    item = schemas["Duplicate"]["properties"]
    assert {"id", "status", "matched_on", "created_at", "decided_by", "decided_at", "referral",
            "earlier_referral"} <= set(item)
    side = schemas["DuplicateSide"]["properties"]
    assert {"id", "reference", "status", "caseworker_id", "created_at", "subject"} <= set(side)
    listing = spec["paths"]["/api/v1/duplicates"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["schema"]["enum"] == ["pending", "confirmed", "dismissed"]
    assert {p["name"] for p in listing["parameters"]} == {"status", "limit", "cursor"}
    for verb in ("confirm", "dismiss"):
        op = spec["paths"][f"/api/v1/duplicates/{{duplicate_id}}/{verb}"]["post"]
        assert op["requestBody"]["required"] is False and "409" in op["responses"]


def test_openapi_is_served_without_a_token(client: Any) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json()["info"]["title"] == "referral-service"
