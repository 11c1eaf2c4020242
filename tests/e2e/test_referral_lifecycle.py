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
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw = make_user("caseworker")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert offer["status"] == "offered"

    resp = client.post(
        f"/api/v1/referrals/{referral['id']}/withdraw", json={"note": "family moved to Karachi"}, headers=cw.headers
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "withdrawn"
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert [a["status"] for a in shown["assignments"]] == ["withdrawn"]
    with services.uow() as uow:
        note = uow.session.scalars(select(CaseNote)).one()
        assert note.kind == "withdrawn" and b"Karachi" not in (note.note_ct or b"")
        keys = [m.routing_key for m in uow.session.scalars(select(OutboxMessage))]
    assert "referral.withdrawn" in keys and "partner.p-peshawar-medical" in keys

    assert client.post(f"/api/v1/referrals/{referral['id']}/reopen", json={}, headers=cw.headers).status_code == 422
    resp = client.post(
        f"/api/v1/referrals/{referral['id']}/reopen", json={"note": "back in Peshawar"}, headers=cw.headers
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "submitted"
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "routing"
    assert sorted(a["status"] for a in shown["assignments"]) == ["offered", "withdrawn"]


def test_only_withdrawn_or_unroutable_referrals_reopen_and_only_for_their_caseworker(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, other = make_user("caseworker"), make_user("caseworker")
    referral = _submit_and_route(client, services, cw.headers)
    url = f"/api/v1/referrals/{referral['id']}"
    assert client.post(f"{url}/reopen", json={"note": "x"}, headers=cw.headers).status_code == 409
    assert client.post(f"{url}/withdraw", json={}, headers=other.headers).status_code == 403
    assert client.post(f"{url}/withdraw", json={}, headers=cw.headers).status_code == 200
    assert client.post(f"{url}/withdraw", json={}, headers=cw.headers).status_code == 409


def test_partner_closes_with_the_services_delivered_and_the_referral_closes(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    bad = client.post(
        f"/api/v1/assignments/{offer['id']}/close",
        json={"outcome": "services_delivered", "services_delivered": ["massage"]},
        headers=staff.headers,
    )
    assert bad.status_code == 422 and "services_delivered" in bad.get_json()["error"]["fields"]
    resp = client.post(
        f"/api/v1/assignments/{offer['id']}/close",
        json={"outcome": "services_delivered", "services_delivered": ["medical"], "note": "surgery done"},
        headers=staff.headers,
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["services_delivered"] == ["medical"]
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "closed"
    assert shown["assignments"][0]["note"] == "surgery done"


# -- moves the state machine refuses (each was possible before: 200, and the case was changed) -------------
def _snapshot(client: Any, referral_id: str, headers: dict[str, str]) -> tuple[Any, ...]:
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=headers).get_json()
    return shown["status"], [
        (a["id"], a["status"], a["close_outcome"], a["services_delivered"]) for a in shown["assignments"]
    ]


def _assert_conflict(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 409, resp.get_json()
    error: dict[str, Any] = resp.get_json()["error"]
    assert error["code"] == "conflict" and error["message"]
    return error


def test_closing_an_offer_nobody_accepted_is_409_for_the_partner_and_a_supervisor(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    before = _snapshot(client, referral["id"], cw.headers)
    assert before == ("routing", [(offer["id"], "offered", None, None)])
    for who in (staff, supervisor):
        resp = client.post(
            f"/api/v1/assignments/{offer['id']}/close",
            json={"outcome": "services_delivered", "services_delivered": ["medical"]},
            headers=who.headers,
        )
        assert "accepted" in _assert_conflict(resp)["message"]
    drain(services)
    assert _snapshot(client, referral["id"], cw.headers) == before
    # The offer is still open to answer.
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200


def test_claiming_a_service_the_assignment_did_not_offer_is_409(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner(services=["medical"])
    add_partner(id="p-peshawar-psy", name="Peshawar Counselling", services=["psychosocial"])
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers, needs=["medical", "psychosocial"])
    medical = next(a for a in referral["assignments"] if a["service"] == "medical")
    assert client.post(f"/api/v1/assignments/{medical['id']}/accept", headers=staff.headers).status_code == 200
    before = _snapshot(client, referral["id"], cw.headers)
    resp = client.post(
        f"/api/v1/assignments/{medical['id']}/close",
        json={"outcome": "services_delivered", "services_delivered": ["medical", "psychosocial"]},
        headers=staff.headers,
    )
    assert "services_delivered" in _assert_conflict(resp)["fields"]
    assert _snapshot(client, referral["id"], cw.headers) == before
    ok = client.post(
        f"/api/v1/assignments/{medical['id']}/close",
        json={"outcome": "services_delivered", "services_delivered": ["medical"]},
        headers=staff.headers,
    )
    assert ok.status_code == 200 and ok.get_json()["services_delivered"] == ["medical"]
    # The other need is still with its own partner: the referral is not closed by this one.
    assert client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()["status"] == "routing"


def test_a_closed_referral_stays_closed_when_consent_is_withdrawn_and_cannot_be_withdrawn(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    assert (
        client.post(
            f"/api/v1/assignments/{offer['id']}/close", json={"outcome": "services_delivered"}, headers=staff.headers
        ).status_code
        == 200
    )
    closed = _snapshot(client, referral["id"], cw.headers)
    assert closed[0] == "closed"

    resp = client.post(f"/api/v1/referrals/{referral['id']}/consent/withdraw", json={}, headers=cw.headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "closed" and resp.get_json()["consent_withdrawn_at"]
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "closed" and shown["consent"]["withdrawn_at"]
    assert _snapshot(client, referral["id"], cw.headers) == closed
    with services.uow() as uow:
        kinds = [m.type for m in uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert kinds[-1] == "referral.consent_withdrawn" and "referral.withdrawn" not in kinds

    _assert_conflict(client.post(f"/api/v1/referrals/{referral['id']}/withdraw", json={}, headers=cw.headers))
    _assert_conflict(client.post(f"/api/v1/referrals/{referral['id']}/consent/withdraw", json={}, headers=cw.headers))
    assert _snapshot(client, referral["id"], cw.headers) == closed


def test_withdrawing_consent_that_was_never_given_is_409(client: Any, services: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    resp = client.post("/api/v1/referrals", json=referral_body(consent={"given": False}), headers=cw.headers)
    rid = resp.get_json()["id"]
    _assert_conflict(client.post(f"/api/v1/referrals/{rid}/consent/withdraw", json={}, headers=cw.headers))
    shown = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()
    assert shown["status"] == "submitted" and shown["consent"]["withdrawn_at"] is None


def test_a_withdrawn_referral_leaves_the_overdue_list(
    client: Any, services: Any, make_user: Any, add_partner: Any, clock: Any
) -> None:
    from referral_service.services.deadlines import fire_due_deadlines

    add_partner()
    cw, supervisor = make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers)
    [offer] = referral["assignments"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    clock.advance(days=2)  # first contact was due within a day
    assert fire_due_deadlines(services) == 1
    overdue = client.get("/api/v1/deadlines/overdue", headers=supervisor.headers).get_json()["items"]
    assert [(d["referral_id"], d["kind"]) for d in overdue] == [(referral["id"], "first_contact")]
    resp = client.post(f"/api/v1/referrals/{referral['id']}/withdraw", json={"note": "moved"}, headers=cw.headers)
    assert resp.status_code == 200
    # Nobody is left to make that contact: it is not listed as overdue any more.
    assert client.get("/api/v1/deadlines/overdue", headers=supervisor.headers).get_json()["items"] == []


def test_once_the_served_need_closes_a_need_no_partner_serves_leaves_the_referral_unroutable_not_routing(
    client: Any, services: Any, make_user: Any, add_partner: Any
) -> None:
    # Found by the pages bench: the referral stayed "routing" for ever, with no offer out and no router
    # coming, so no supervisor's list of unroutable referrals ever showed the victim's unmet need.
    add_partner(services=["medical"])
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _submit_and_route(client, services, cw.headers, needs=["medical", "legal_aid"])
    [medical] = referral["assignments"]
    assert referral["status"] == "routing"  # medical is offered; legal aid found no partner
    assert client.post(f"/api/v1/assignments/{medical['id']}/accept", headers=staff.headers).status_code == 200
    closed = client.post(
        f"/api/v1/assignments/{medical['id']}/close",
        json={"outcome": "services_delivered", "services_delivered": ["medical"]},
        headers=staff.headers,
    )
    assert closed.status_code == 200, closed.get_json()
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral['id']}", headers=cw.headers).get_json()
    assert shown["status"] == "unroutable"
    supervisor = make_user("supervisor")
    listed = client.get("/api/v1/referrals?status=unroutable", headers=supervisor.headers).get_json()["items"]
    assert [r["id"] for r in listed] == [referral["id"]]
