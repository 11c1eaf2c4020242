from __future__ import annotations

from typing import Any

from tests.factories import referral_body
from tests.pipeline import drain


def test_submitted_referral_is_offered_to_the_matching_partner(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw = make_user("caseworker")
    resp = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["reference"].startswith("VAN-")
    drain(services)
    shown = client.get(f"/api/v1/referrals/{body['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "routing"
    assert [a["partner_id"] for a in shown["assignments"]] == ["p-peshawar-medical"]
    assert shown["subject"]["full_name"] == "Zarmeena Khattak"
