from __future__ import annotations

from typing import Any

from referral_service.api.openapi import build_spec


def test_openapi_document_lists_every_contract_path_and_schema() -> None:
    spec = build_spec()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/referrals", "/api/v1/referrals/{referral_id}", "/api/v1/assignments",
                 "/api/v1/assignments/{assignment_id}/accept", "/api/v1/assignments/{assignment_id}/decline",
                 "/api/v1/assignments/{assignment_id}/followups", "/api/v1/assignments/{assignment_id}/close",
                 "/api/v1/partners", "/api/v1/deadlines/overdue", "/api/v1/referrals/{referral_id}/consent/withdraw"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    referral_input = schemas["ReferralInput"]
    assert set(referral_input["required"]) >= {"subject", "needs", "risk_level", "consent"}
    assert schemas["Error"]["properties"]["error"]


def test_openapi_is_served_without_a_token(client: Any) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json()["info"]["title"] == "referral-service"
