"""Follow-up deadlines by risk level: unanswered offers expire and move on; missed contacts show as overdue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from referral_service.db.models import Deadline, OutboxMessage
from referral_service.services.deadlines import fire_due_deadlines
from tests.factories import referral_body
from tests.pipeline import drain


def _submit(client: Any, headers: dict[str, str], **overrides: Any) -> str:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def test_an_unanswered_offer_expires_at_its_risk_deadline_and_goes_to_the_next_partner(
    client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner(id="p-first", languages=["ps"])
    add_partner(id="p-second", languages=["ur"])
    cw = make_user("caseworker")
    referral_id = _submit(client, cw.headers, risk_level="critical")
    drain(services)
    [first] = client.get(f"/api/v1/referrals/{referral_id}", headers=cw.headers).get_json()["assignments"]
    assert first["partner_id"] == "p-first"  # speaks the client's language

    clock.advance(minutes=59)
    assert fire_due_deadlines(services) == 0
    clock.advance(minutes=2)  # critical: one hour to accept
    assert fire_due_deadlines(services) == 1
    assert fire_due_deadlines(services) == 0  # fired once, however often the scheduler runs
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=cw.headers).get_json()
    assert [(a["partner_id"], a["status"]) for a in shown["assignments"]] == [
        ("p-first", "expired"),
        ("p-second", "offered"),
    ]
    with services.uow() as uow:
        keys = [m.routing_key for m in uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert "assignment.expired" in keys


def test_missed_first_contact_is_overdue_for_supervisors_riskiest_first(
    client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner(capacity=10)
    cw, sup = make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    low = _submit(client, cw.headers, risk_level="low", subject__cnic="17301-7654321-1", subject__phone=None)
    high = _submit(client, cw.headers, risk_level="high")
    drain(services)
    for assignment in client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]:
        assert client.post(f"/api/v1/assignments/{assignment['id']}/accept", headers=staff.headers).status_code == 200

    clock.advance(days=8)  # past first contact for both (high: 24 h, low: 7 days)
    assert fire_due_deadlines(services) == 2
    overdue = client.get("/api/v1/deadlines/overdue", headers=sup.headers).get_json()["items"]
    assert [(d["referral_id"], d["kind"], d["risk_level"]) for d in overdue] == [
        (high, "first_contact", "high"),
        (low, "first_contact", "low"),
    ]
    assert set(overdue[0]) >= {"referral_id", "assignment_id", "partner_id", "kind", "due_at", "risk_level"}
    assert client.get("/api/v1/deadlines/overdue", headers=cw.headers).status_code == 403

    # Recording contact meets the deadline and starts the follow-up clock.
    high_assignment = overdue[0]["assignment_id"]
    resp = client.post(
        f"/api/v1/assignments/{high_assignment}/followups", json={"outcome": "contacted"}, headers=staff.headers
    )
    assert resp.status_code == 201
    remaining = client.get("/api/v1/deadlines/overdue", headers=sup.headers).get_json()["items"]
    assert [d["referral_id"] for d in remaining] == [low]
    with services.uow() as uow:
        pending = uow.session.scalars(
            select(Deadline).where(Deadline.assignment_id == high_assignment, Deadline.status == "pending")
        ).one()
        assert pending.kind == "followup"
        assert (pending.due_at - clock.now()).days == 14  # high risk: follow up every 14 days


def test_overdue_and_partner_lists_page_with_limit_and_cursor(
    client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    for i in range(3):
        add_partner(id=f"p-page-{i}", capacity=10)
    cw, sup = make_user("caseworker"), make_user("supervisor")
    for i, risk in enumerate(("low", "critical", "medium", "high", "critical")):
        _submit(client, cw.headers, risk_level=risk, subject__cnic=f"17301-765432{i}-1", subject__phone=None)
    drain(services)
    for i in range(3):
        staff = make_user("partner", partner_id=f"p-page-{i}")
        for a in client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]:
            assert client.post(f"/api/v1/assignments/{a['id']}/accept", headers=staff.headers).status_code == 200
    clock.advance(days=8)  # past every first-contact deadline (low risk: 7 days)
    assert fire_due_deadlines(services) == 5

    seen, cursor = [], None
    while True:
        url = "/api/v1/deadlines/overdue?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=sup.headers).get_json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    full = client.get("/api/v1/deadlines/overdue", headers=sup.headers).get_json()["items"]
    assert [d["id"] for d in seen] == [d["id"] for d in full] and len(full) == 5
    assert [d["risk_level"] for d in full][:2] == ["critical", "critical"]
    assert client.get("/api/v1/deadlines/overdue?cursor=bogus", headers=sup.headers).status_code == 422

    first = client.get("/api/v1/partners?limit=2", headers=cw.headers).get_json()
    rest = client.get(f"/api/v1/partners?limit=2&cursor={first['next']}", headers=cw.headers).get_json()
    assert [p["id"] for p in first["items"] + rest["items"]] == ["p-page-0", "p-page-1", "p-page-2"]
    assert rest["next"] is None
