"""The follow-up cycle by time travel: notice before due, overdue reminders, escalation, the clock
moving with each follow-up, and nothing left ticking once a case is closed or withdrawn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Deadline, OutboxMessage
from referral_service.messaging.names import PARTNERS_EXCHANGE, partner_routing_key
from referral_service.services.deadlines import fire_due_deadlines
from tests.conftest import FakeClock, embedded_settings
from tests.factories import referral_body
from tests.pipeline import drain

PARTNER = "p-peshawar-medical"


def _submit(client: Any, headers: dict[str, str], **overrides: Any) -> str:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def _outbox(services: Any, since: int = 0) -> list[OutboxMessage]:
    with services.uow() as uow:
        rows = list(uow.session.scalars(select(OutboxMessage).where(OutboxMessage.id > since).order_by("id")))
        uow.session.expunge_all()
        return rows


def _last_id(services: Any) -> int:
    rows = _outbox(services)
    return rows[-1].id if rows else 0


def _accepted_case(client: Any, services: Any, make_user: Any, add_partner: Any, **overrides: Any) -> tuple:
    add_partner(capacity=10)
    cw, sup = make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id=PARTNER)
    referral_id = _submit(client, cw.headers, **overrides)
    drain(services)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    return referral_id, offer["id"], cw, sup, staff


def _overdue(client: Any, sup: Any) -> list[dict[str, Any]]:
    resp = client.get("/api/v1/deadlines/overdue", headers=sup.headers)
    assert resp.status_code == 200
    return list(resp.get_json()["items"])


def test_a_missed_follow_up_is_noticed_before_due_reminded_every_interval_and_escalated_after_the_limit(
    client: Any, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    # High risk, built-in policy: first contact within 24 h, follow up every 14 days, remind every
    # 6 h, escalate after 2 reminders; the partner hears it is coming due at 80 % of the window.
    referral_id, assignment_id, _cw, sup, staff = _accepted_case(client, services, make_user, add_partner)
    resp = client.post(
        f"/api/v1/assignments/{assignment_id}/followups", json={"outcome": "contacted"}, headers=staff.headers
    )
    assert resp.status_code == 201
    mark = _last_id(services)

    clock.advance(days=11, hours=4)  # 80 % of 14 days is 11 d 4.8 h: a little before
    assert fire_due_deadlines(services) == 0
    clock.advance(minutes=50)
    assert fire_due_deadlines(services) == 1
    assert fire_due_deadlines(services) == 0  # told once
    due = [m for m in _outbox(services, mark) if m.type == "followup.due"]
    assert {(m.exchange, m.routing_key) for m in due} == {
        ("referrals.events", "followup.due"),
        (PARTNERS_EXCHANGE, partner_routing_key(PARTNER)),
    }
    body = due[0].body
    assert (body["assignment_id"], body["partner_id"], body["kind"], body["service"]) == (
        assignment_id,
        PARTNER,
        "followup",
        "medical",
    )
    assert _overdue(client, sup) == []  # coming due is not overdue

    clock.advance(days=3)  # past the 14 days
    assert fire_due_deadlines(services) == 1
    [row] = _overdue(client, sup)
    assert (row["referral_id"], row["kind"], row["reminders"], row["escalated"]) == (
        referral_id,
        "followup",
        1,
        False,
    )
    clock.advance(hours=5, minutes=59)
    assert fire_due_deadlines(services) == 0  # the next reminder is 6 h after the last
    clock.advance(minutes=2)
    assert fire_due_deadlines(services) == 1
    [row] = _overdue(client, sup)
    assert (row["reminders"], row["escalated"]) == (2, False)
    clock.advance(hours=6)
    assert fire_due_deadlines(services) == 1  # two reminders went unanswered: to the supervisors
    [row] = _overdue(client, sup)
    assert (row["reminders"], row["escalated"]) == (2, True)
    assert row["overdue_seconds"] > 12 * 3600
    clock.advance(hours=6)
    assert fire_due_deadlines(services) == 1  # and the partner keeps being reminded
    [row] = _overdue(client, sup)
    assert (row["reminders"], row["escalated"]) == (3, True)

    sent = _outbox(services, mark)
    overdue = [m.body["reminder"] for m in sent if m.type == "followup.overdue" and m.exchange == PARTNERS_EXCHANGE]
    assert overdue == [1, 2, 3]
    escalated = [m for m in sent if m.type == "followup.escalated"]
    assert [(m.exchange, m.body["reminders"]) for m in escalated] == [("referrals.events", 2)]  # not the partner's
    for m in sent:  # identifiers and codes only, never the person
        assert "Zarmeena" not in json.dumps(m.body) and "17301" not in json.dumps(m.body)

    # Recording the follow-up ends the overdue one and moves the next one 14 days on.
    resp = client.post(
        f"/api/v1/assignments/{assignment_id}/followups", json={"outcome": "service_started"}, headers=staff.headers
    )
    assert resp.status_code == 201
    assert _overdue(client, sup) == []
    with services.uow() as uow:
        [pending] = uow.session.scalars(
            select(Deadline).where(Deadline.assignment_id == assignment_id, Deadline.status == "pending")
        ).all()
        assert pending.kind == "followup" and pending.due_at - clock.now() == timedelta(days=14)
        assert pending.reminders == 0 and pending.escalated_at is None


@pytest.mark.parametrize("how", ["close", "withdraw"])
def test_closing_or_withdrawing_ends_every_timer_of_the_case_and_nothing_is_reminded_after(
    how: str, client: Any, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    referral_id, assignment_id, cw, sup, staff = _accepted_case(client, services, make_user, add_partner)
    clock.advance(days=2)  # first contact (24 h) missed
    assert fire_due_deadlines(services) == 1
    assert len(_overdue(client, sup)) == 1
    if how == "close":
        resp = client.post(
            f"/api/v1/assignments/{assignment_id}/close",
            json={"outcome": "cannot_contact", "services_delivered": []},
            headers=staff.headers,
        )
    else:
        resp = client.post(f"/api/v1/referrals/{referral_id}/withdraw", json={}, headers=cw.headers)
    assert resp.status_code == 200, resp.get_json()
    assert _overdue(client, sup) == []
    with services.uow() as uow:  # in the same transaction as the move: no open timer is left
        assert uow.session.scalars(select(Deadline).where(Deadline.wake_at.is_not(None))).all() == []
    mark = _last_id(services)
    for _ in range(5):
        clock.advance(days=30)
        assert fire_due_deadlines(services) == 0
    assert [m.type for m in _outbox(services, mark) if m.type.startswith("followup.")] == []


def test_a_declined_offer_re_offered_gets_a_fresh_accept_deadline_from_the_new_offer(
    client: Any, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    add_partner(id="p-first", languages=["ps"])
    add_partner(id="p-second", languages=["ur"])
    cw = make_user("caseworker")
    first = make_user("partner", partner_id="p-first")
    referral_id = _submit(client, cw.headers, risk_level="high")  # 4 h to accept
    drain(services)
    clock.advance(hours=3)
    [offer] = client.get("/api/v1/assignments", headers=first.headers).get_json()["items"]
    resp = client.post(
        f"/api/v1/assignments/{offer['id']}/decline", json={"reason": "no_capacity"}, headers=first.headers
    )
    assert resp.status_code == 200
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=cw.headers).get_json()
    assert [(a["partner_id"], a["status"]) for a in shown["assignments"]] == [
        ("p-first", "declined"),
        ("p-second", "offered"),
    ]
    clock.advance(hours=1, minutes=1)  # 4 h after the first offer, 1 h after the second
    assert fire_due_deadlines(services) == 0
    clock.advance(hours=3)  # 4 h after the second offer
    assert fire_due_deadlines(services) == 1
    drain(services)
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=cw.headers).get_json()
    assert [a["status"] for a in shown["assignments"]] == ["declined", "expired"]


@pytest.fixture
def strict_services(tmp_path: Path, home: Path, clock: FakeClock) -> Iterator[Services]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"high": {"first_contact": "PT2H", "remind_every": "PT30M", "escalate_after": 0}}))
    svc = bootstrap(embedded_settings(home, REFERRAL_DEADLINE_POLICY=str(policy)), clock=clock)
    yield svc
    svc.dispose()


def test_a_policy_file_sets_the_reminder_interval_and_escalates_at_due_with_escalate_after_zero(
    strict_services: Services, clock: FakeClock
) -> None:
    from referral_service.app import create_app
    from referral_service.services import partners, users
    from schemas import PartnerSchema
    from tests.factories import partner

    services = strict_services
    client = create_app(services, {"TESTING": True}).test_client()
    partners.upsert_partners(services, [PartnerSchema().load(partner())])
    cw = users.create_user(services, name="cw", role="caseworker")
    sup = users.create_user(services, name="sup", role="supervisor")
    staff = users.create_user(services, name="staff", role="partner", partner_id=PARTNER)
    h = {k: {"Authorization": f"Bearer {u['token']}"} for k, u in (("cw", cw), ("sup", sup), ("staff", staff))}
    _submit(client, h["cw"])
    drain(services)
    [offer] = client.get("/api/v1/assignments", headers=h["staff"]).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=h["staff"]).status_code == 200

    clock.advance(minutes=97)  # 80 % of 2 h is 96 minutes
    assert fire_due_deadlines(services) == 1  # followup.due
    clock.advance(minutes=24)
    assert fire_due_deadlines(services) == 1
    [row] = client.get("/api/v1/deadlines/overdue", headers=h["sup"]).get_json()["items"]
    assert (row["kind"], row["reminders"], row["escalated"]) == ("first_contact", 1, True)
    clock.advance(minutes=31)
    assert fire_due_deadlines(services) == 1
    [row] = client.get("/api/v1/deadlines/overdue", headers=h["sup"]).get_json()["items"]
    assert row["reminders"] == 2
    policy = client.get("/api/v1/deadlines/policy", headers=h["sup"]).get_json()
    assert policy["levels"]["high"] == {
        "accept": "PT4H",
        "first_contact": "PT2H",
        "followup_every": "P14D",
        "remind_every": "PT30M",
        "escalate_after": 0,
        "due_notice": 0.8,
    }
    assert client.get("/api/v1/deadlines/policy", headers=h["cw"]).status_code == 403


def test_a_tick_reads_only_due_rows_through_the_wake_index(services: Services) -> None:
    with services.uow() as uow:
        plan = uow.session.execute(
            text("EXPLAIN QUERY PLAN SELECT id FROM deadlines WHERE wake_at <= :now ORDER BY wake_at LIMIT 100"),
            {"now": "2026-12-01 00:00:00"},
        ).all()
    assert any("ix_deadlines_wake_at" in str(row) for row in plan), plan


def test_the_partner_inbox_shows_the_next_deadline_coming_due_then_overdue_with_its_reminders(
    client: Any, services: Any, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    _referral_id, assignment_id, _cw, _sup, staff = _accepted_case(client, services, make_user, add_partner)

    def next_deadline() -> dict[str, Any]:
        [item] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
        assert item["id"] == assignment_id
        return dict(item["next_deadline"])

    assert (next_deadline()["kind"], next_deadline()["state"]) == ("first_contact", "pending")
    clock.advance(hours=20)  # 80 % of the 24 h to first contact: the partner is told
    fire_due_deadlines(services)
    assert next_deadline()["state"] == "due_soon"
    clock.advance(hours=5)
    fire_due_deadlines(services)
    clock.advance(hours=6, minutes=1)
    fire_due_deadlines(services)
    assert (next_deadline()["state"], next_deadline()["reminders"]) == ("overdue", 2)
    resp = client.post(
        f"/api/v1/assignments/{assignment_id}/followups", json={"outcome": "contacted"}, headers=staff.headers
    )
    assert resp.status_code == 201
    assert (next_deadline()["kind"], next_deadline()["state"]) == ("followup", "pending")
