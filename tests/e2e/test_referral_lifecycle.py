"""Withdraw and re-open, and closing with the services delivered."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from referral_service.db.models import CaseNote, OutboxMessage
from tests.factories import referral_body
from tests.pipeline import drain


def _submit_and_route(client: Any, services: Any, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    drain(services)
    return client.get(f"/api/v1/referrals/{resp.get_json()['id']}", headers=headers).get_json()


def test_withdrawn_referral_pulls_offers_and_reopening_routes_it_again(
        client: Any, services: Any, make_user: Any, add_partner: Any) -> None:
    add_partner()
    cw = make_user("caseworker")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert offer["status"] == "offered"

    resp = client.post(f"/api/v1/referrals/{referral['id']}/withdraw", json={"note": "family moved to Karachi"},
                       headers=cw.headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "withdrawn"
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert [a["status"] for a in shown["assignments"]] == ["withdrawn"]
    with services.uow() as uow:
        note = uow.session.scalars(select(CaseNote)).one()
        assert note.kind == "withdrawn" and b"Karachi" not in (note.note_ct or b"")
        keys = [m.routing_key for m in uow.session.scalars(select(OutboxMessage))]
    assert "referral.withdrawn" in keys and "partner.p-peshawar-medical" in keys

    assert client.post(f"/api/v1/referrals/{referral['id']}/reopen", json={}, headers=cw.headers).status_code == 422
    resp = client.post(f"/api/v1/referrals/{referral['id']}/reopen", json={"note": "back in Peshawar"},
                       headers=cw.headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "submitted"
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "routing"
    assert sorted(a["status"] for a in shown["assignments"]) == ["offered", "withdrawn"]


def test_only_withdrawn_or_unroutable_referrals_reopen_and_only_for_their_caseworker(
        client: Any, services: Any, make_user: Any, add_partner: Any) -> None:
    add_partner()
    cw, other = make_user("caseworker"), make_user("caseworker")
    referral = _submit_and_route(client, services, cw.headers)
    url = f"/api/v1/referrals/{referral['id']}"
    assert client.post(f"{url}/reopen", json={"note": "x"}, headers=cw.headers).status_code == 409
    assert client.post(f"{url}/withdraw", json={}, headers=other.headers).status_code == 403
    assert client.post(f"{url}/withdraw", json={}, headers=cw.headers).status_code == 200
    assert client.post(f"{url}/withdraw", json={}, headers=cw.headers).status_code == 409


def test_partner_closes_with_the_services_delivered_and_the_referral_closes(
        client: Any, services: Any, make_user: Any, add_partner: Any) -> None:
    add_partner()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    bad = client.post(f"/api/v1/assignments/{offer['id']}/close",
                      json={"outcome": "services_delivered", "services_delivered": ["massage"]}, headers=staff.headers)
    assert bad.status_code == 422 and "services_delivered" in bad.get_json()["error"]["fields"]
    resp = client.post(f"/api/v1/assignments/{offer['id']}/close",
                       json={"outcome": "services_delivered", "services_delivered": ["medical"],
                             "note": "surgery done"}, headers=staff.headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["services_delivered"] == ["medical"]
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "closed"
    assert shown["assignments"][0]["note"] == "surgery done"
