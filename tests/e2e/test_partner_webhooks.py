"""Offers reach partners' own systems: Standard Webhooks to a real local receiver that verifies each
signature with the `standardwebhooks` package, retried on failure, parked after a day, replayable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.audit.log import AuditFilter
from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Assignment, Notification, OutboxMessage, WebhookEndpoint
from referral_service.domain import events
from referral_service.services import notifications, webhooks
from referral_service.services.deadlines import fire_due_deadlines
from referral_service.services.webhooks import register_webhook
from tests.conftest import FakeClock, embedded_settings
from tests.e2e.service_process import base_env, cli
from tests.factories import BASE_REFERRAL, referral_body
from tests.pipeline import InProcessPipeline
from tests.receivers import WebhookReceiver, webhook_receiver

PARTNER_ID = "p-peshawar-medical"
PERSONAL = [
    BASE_REFERRAL["subject"]["full_name"],
    BASE_REFERRAL["subject"]["cnic"],
    BASE_REFERRAL["subject"]["phone"],
    BASE_REFERRAL["subject"]["date_of_birth"],
    "Hayatabad",
    "Qissa Khwani",
    "Zarmeena",
]


@pytest.fixture
def services(home: Path, clock: FakeClock) -> Iterator[Services]:
    svc = bootstrap(embedded_settings(home, REFERRAL_WEBHOOK_ALLOW_PRIVATE="1"), clock=clock)
    yield svc
    svc.dispose()


@pytest.fixture
def pipeline(services: Services) -> Iterator[InProcessPipeline]:
    p = InProcessPipeline(services)
    yield p
    p.close()


@pytest.fixture
def receiver(services: Services, add_partner: Any) -> Iterator[WebhookReceiver]:
    add_partner()
    with webhook_receiver() as r:
        r.secret = register_webhook(services, PARTNER_ID, r.url)["secret"]
        yield r


def _submit(client: Any, make_user: Any, **overrides: Any) -> tuple[dict[str, Any], Any]:
    cw = make_user("caseworker")
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=cw.headers)
    assert resp.status_code == 201
    return resp.get_json(), cw


def _on_record(services: Services, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The audit log's entries of `action`: who, the outcome, the details."""
    with services.uow() as uow:
        rows = services.audit.query(uow.session, AuditFilter(action=action), limit=50)
        opened = [services.audit.open_entry(uow.session, row) for row in rows]
        return [(e.record["actor_id"], e.record["outcome"], e.details) for e in opened]


def _rows(services: Services) -> list[Notification]:
    with services.uow() as uow:
        rows = list(uow.session.scalars(select(Notification).order_by(Notification.created_at)))
        uow.session.expunge_all()  # read after the transaction ends
        return rows


def test_an_offer_is_posted_once_signed_with_identifiers_only_and_a_withdrawal_follows(
    services: Services, pipeline: InProcessPipeline, receiver: WebhookReceiver, client: Any, make_user: Any
) -> None:
    referral, cw = _submit(client, make_user)
    pipeline.drain()
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 1, "parked": 0}
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 0, "parked": 0}

    [offer] = receiver.received
    assert offer.error is None, offer.error
    assert offer.verified["type"] == "assignment.offered"
    data = offer.verified["data"]
    assert data["referral_id"] == referral["id"] and data["partner_id"] == PARTNER_ID
    assert data["service"] == "medical" and data["risk_level"] == "high"
    assert data["url"] == f"http://127.0.0.1:8000/referrals/{referral['id']}"
    assert data["due_at"]  # the accept-by deadline
    assert offer.headers["webhook-id"].startswith("msg_")
    assert offer.headers["webhook-signature"].startswith("v1,")

    resp = client.post(f"/api/v1/referrals/{referral['id']}/withdraw", json={"note": "moved away"}, headers=cw.headers)
    assert resp.status_code == 200
    pipeline.drain()
    notifications.deliver_due(services)
    assert [r.verified["type"] for r in receiver.received] == ["assignment.offered", "assignment.withdrawn"]
    assert receiver.received[1].verified["data"]["assignment_id"] == data["assignment_id"]
    for r in receiver.received:
        text = r.body.decode()
        assert not [m for m in PERSONAL if m in text], text
        assert "moved away" not in text


def test_a_500_is_retried_within_30_seconds_with_the_same_webhook_id(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    receiver.script = [500]
    _submit(client, make_user)
    pipeline.drain()
    assert notifications.deliver_due(services)["pending"] == 1
    [row] = _rows(services)
    assert row.attempts == 1 and row.last_status == 500 and row.last_error == "HTTP 500"
    wait = row.next_attempt_at - clock.now()
    assert timedelta(seconds=15) <= wait <= timedelta(seconds=30)

    assert notifications.deliver_due(services)["delivered"] == 0  # not due yet
    clock.advance(seconds=30)
    assert notifications.deliver_due(services)["delivered"] == 1

    first, retry = receiver.received
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == row.id
    assert retry.error is None and retry.verified == first.verified
    assert first.headers["webhook-timestamp"] != retry.headers["webhook-timestamp"]  # signed afresh


def test_a_receiver_that_keeps_failing_is_retried_for_a_day_then_parked_with_the_reason(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    receiver.verify = False  # the fake clock runs a day ahead of the receiver's
    receiver.script = [503] * 1000
    _submit(client, make_user)
    pipeline.drain()
    start = clock.now()
    for _ in range(200):
        notifications.deliver_due(services)
        [row] = _rows(services)
        if row.status == "parked":
            break
        clock.current = row.next_attempt_at
    assert row.status == "parked" and row.last_error == "HTTP 503"
    assert row.last_attempt_at - start >= timedelta(hours=24)
    assert row.last_attempt_at - start < timedelta(hours=26)
    assert len(receiver.received) == row.attempts
    assert 20 <= row.attempts <= 60  # exponential at first, then at most an hour apart
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_a_notify_worker_killed_after_claiming_loses_nothing(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    _submit(client, make_user)
    pipeline.drain()
    claimed = notifications._claim(services, clock.now(), 10)  # then the process dies before sending
    assert len(claimed) == 1
    assert notifications.deliver_due(services)["delivered"] == 0  # leased to the dead worker
    clock.advance(seconds=services.settings.notify_lease_seconds)
    assert notifications.deliver_due(services)["delivered"] == 1
    assert len(receiver.received) == 1 and receiver.received[0].error is None


def test_a_partner_notice_reaches_the_webhook_only_if_its_transaction_commits_and_only_once(
    services: Services, pipeline: InProcessPipeline, receiver: WebhookReceiver, client: Any, make_user: Any
) -> None:
    referral, _cw = _submit(client, make_user)
    pipeline.drain()
    assert notifications.deliver_due(services)["delivered"] == 1
    [row] = _rows(services)
    with services.uow() as uow:
        [assignment_id] = uow.session.scalars(select(Assignment.id).where(Assignment.referral_id == referral["id"]))
    offer = events.AssignmentOffered(
        referral_id=referral["id"],
        assignment_id=assignment_id,
        partner_id=PARTNER_ID,
        service="medical",
        risk_level="high",
    )
    with services.uow() as uow:
        uow.deliver_to_partner(offer, PARTNER_ID)
        # The transaction rolls back (an error in the router, a lost lock): the notice goes with it.
    assert notifications.deliver_due(services)["delivered"] == 0
    assert [r.id for r in _rows(services)] == [row.id]
    with services.uow() as uow:
        uow.deliver_to_partner(offer, PARTNER_ID)
        uow.commit()
    assert notifications.deliver_due(services)["delivered"] == 1
    assert notifications.deliver_due(services)["delivered"] == 0  # taken up once
    assert {r.event_id for r in _rows(services)} == {row.event_id, offer.event_id}
    assert [r.verified["data"]["event_id"] for r in receiver.received] == [row.event_id, offer.event_id]
    with services.uow() as uow:
        pending = uow.session.scalars(select(OutboxMessage.id).where(OutboxMessage.notify_pending.is_(True))).all()
    assert pending == []


def test_a_damaged_or_repeated_partner_notice_is_skipped_alone_and_the_others_of_its_round_are_delivered(
    services: Services, pipeline: InProcessPipeline, receiver: WebhookReceiver, client: Any, make_user: Any
) -> None:
    referral, _cw = _submit(client, make_user)
    pipeline.drain()
    with services.uow() as uow:
        notice = uow.session.scalars(select(OutboxMessage).where(OutboxMessage.notify_pending.is_(True))).one()
        damaged = OutboxMessage(
            event_id="00000000-0000-0000-0000-00000000dead",
            type="assignment.offered",
            aggregate_id=referral["id"],
            exchange=notice.exchange,
            routing_key=notice.routing_key,
            body={"type": "assignment.offered", "event_id": 7},  # no ids: cannot be sent
            notify_pending=True,
        )
        # A copy of the offer's notice under another outbox key (tampered, or written twice): the
        # partner hears of the offer once, and the round does not fail on the unique key.
        repeated = OutboxMessage(
            event_id="00000000-0000-0000-0000-0000000beef0",
            type=notice.type,
            aggregate_id=referral["id"],
            exchange=notice.exchange,
            routing_key=notice.routing_key,
            body=dict(notice.body),
            notify_pending=True,
        )
        uow.session.add_all([damaged, repeated])
        uow.commit()
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 1, "parked": 0}
    assert len(receiver.received) == 1 and receiver.received[0].verified["data"]["referral_id"] == referral["id"]
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 0, "parked": 0}
    with services.uow() as uow:
        assert uow.session.scalars(select(OutboxMessage.id).where(OutboxMessage.notify_pending.is_(True))).all() == []


def test_a_receiver_that_times_out_is_retried_with_the_same_id_and_costs_one_time_out_per_round(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    services.settings = replace(services.settings, webhook_timeout_seconds=1)
    receiver.delays = [3.0]  # the first POST hangs past the time-out
    _submit(client, make_user)
    _submit(client, make_user, subject__phone="+923001234599", subject__cnic="17301-7654321-5")
    pipeline.drain()
    started = time.monotonic()
    assert notifications.deliver_due(services) == {"pending": 2, "delivered": 0, "parked": 0}
    assert time.monotonic() - started < 2.5  # one time-out, not one per message
    rows = {r.id: r for r in _rows(services)}
    errors = sorted(r.last_error or "" for r in rows.values())
    assert errors == ["not sent: timed out on an earlier message of this round", "timed out"]
    assert all(r.last_status is None and r.attempts == 1 for r in rows.values())
    assert len(receiver.received) == 1  # the second was not tried against a hung receiver

    clock.advance(seconds=30)
    assert notifications.deliver_due(services)["delivered"] == 2
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 3 and set(ids) == set(rows) and ids[0] in ids[1:]  # the timed-out one again, same id
    assert all(r.error is None for r in receiver.received)


def test_one_round_sends_a_partners_offers_over_one_kept_alive_connection(
    services: Services, pipeline: InProcessPipeline, add_partner: Any, client: Any, make_user: Any
) -> None:
    add_partner()
    with webhook_receiver(keep_alive=True) as r:
        r.secret = register_webhook(services, PARTNER_ID, r.url)["secret"]
        for i in range(4):
            _submit(client, make_user, subject__phone=f"+92300765432{i}", subject__cnic=f"17301-765432{i}-5")
        pipeline.drain()
        assert notifications.deliver_due(services)["delivered"] == 4
        assert len(r.received) == 4 and all(x.error is None for x in r.received)
        assert len({x.client_port for x in r.received}) == 1
        assert len({x.headers["webhook-id"] for x in r.received}) == 4


def test_follow_up_due_and_overdue_reach_the_partners_webhook_signed_with_identifiers_only(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    receiver.now = clock.now
    referral, _cw = _submit(client, make_user)
    pipeline.drain()
    staff = make_user("partner", partner_id=PARTNER_ID)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    notifications.deliver_due(services)
    clock.advance(hours=20)  # 80 % of the 24 h to first contact
    fire_due_deadlines(services)
    clock.advance(hours=5)  # past it
    fire_due_deadlines(services)
    assert notifications.deliver_due(services)["delivered"] == 2
    kinds = [r.verified["type"] for r in receiver.received]
    assert kinds == ["assignment.offered", "followup.due", "followup.overdue"]
    for r in receiver.received[1:]:
        assert r.error is None, r.error
        data = r.verified["data"]
        assert data["assignment_id"] == offer["id"] and data["referral_id"] == referral["id"]
        assert data["kind"] == "first_contact" and data["deadline_id"] and data["due_at"]
        assert data["risk_level"] == "high" and data["service"] == "medical"
        assert not [m for m in PERSONAL if m in r.body.decode()]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 3


def test_old_delivered_rows_are_pruned_and_parked_ones_kept_twice_as_long(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    clock: FakeClock,
) -> None:
    _submit(client, make_user)
    pipeline.drain()
    notifications.deliver_due(services)
    receiver.script = [500] * 1000
    _submit(client, make_user, subject__phone="+923001234599", subject__cnic="17301-7654321-5")
    pipeline.drain()
    while notifications.deliver_due(services)["parked"] == 0:
        clock.advance(hours=1)
    assert sorted(r.status for r in _rows(services)) == ["delivered", "parked"]
    days = services.settings.notification_retention_days
    clock.advance(days=days - 2)
    assert notifications.prune(services) == 0
    clock.advance(days=3)
    assert notifications.prune(services) == 1
    assert [r.status for r in _rows(services)] == ["parked"]
    clock.advance(days=days)
    assert notifications.prune(services) == 1
    assert _rows(services) == []


def test_admins_see_a_partners_deliveries_and_replay_one_with_the_same_id(
    services: Services, pipeline: InProcessPipeline, receiver: WebhookReceiver, client: Any, make_user: Any
) -> None:
    _submit(client, make_user)
    pipeline.drain()
    notifications.deliver_due(services)
    admin, supervisor = make_user("admin"), make_user("supervisor")

    resp = client.get(f"/api/v1/partners/{PARTNER_ID}/deliveries", headers=admin.headers)
    assert resp.status_code == 200, resp.get_json()
    [item] = resp.get_json()["items"]
    assert (item["channel"], item["event_type"], item["status"], item["attempts"]) == (
        "webhook",
        "assignment.offered",
        "delivered",
        1,
    )
    assert client.get(f"/api/v1/partners/{PARTNER_ID}/deliveries", headers=supervisor.headers).status_code == 403
    assert client.get("/api/v1/partners/nobody/deliveries", headers=admin.headers).status_code == 404

    replay = client.post(f"/api/v1/partners/{PARTNER_ID}/deliveries/{item['id']}/replay", headers=admin.headers)
    assert replay.status_code == 200 and replay.get_json()["status"] == "pending"
    assert notifications.deliver_due(services)["delivered"] == 1
    assert [r.headers["webhook-id"] for r in receiver.received] == [item["id"], item["id"]]
    assert (
        client.post(
            f"/api/v1/partners/{PARTNER_ID}/deliveries/{item['id']}/replay", headers=supervisor.headers
        ).status_code
        == 403
    )
    # The admin's replay, and the supervisor's refused one, are on record naming the delivery.
    replays = {
        (actor, outcome, details["delivery_id"])
        for actor, outcome, details in _on_record(services, "partner.deliveries.replay")
    }
    assert replays == {(admin.actor.user_id, "allowed", item["id"]), (supervisor.actor.user_id, "denied", item["id"])}


def test_a_private_address_is_refused_at_delivery_once_private_addresses_are_no_longer_allowed(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    client: Any,
    make_user: Any,
    home: Path,
    clock: FakeClock,
) -> None:
    _submit(client, make_user)
    pipeline.drain()
    strict = bootstrap(embedded_settings(home), clock=clock)
    try:
        assert notifications.deliver_due(strict)["pending"] == 1
    finally:
        strict.dispose()
    [row] = _rows(services)
    assert receiver.received == []
    assert (row.last_error or "").startswith("webhook URL refused: only https://")


def test_the_workers_kept_connection_serves_later_rounds_until_the_url_stops_passing_its_check(
    services: Services, pipeline: InProcessPipeline, add_partner: Any, client: Any, make_user: Any
) -> None:
    add_partner()
    sender = notifications.Sender(services)
    with webhook_receiver(keep_alive=True) as r:
        r.secret = register_webhook(services, PARTNER_ID, r.url)["secret"]
        for i in range(2):  # two rounds
            _submit(client, make_user, subject__phone=f"+92300765432{i}", subject__cnic=f"17301-765432{i}-5")
            pipeline.drain()
            assert notifications.deliver_due(services, sender=sender)["delivered"] == 1
        assert len(r.received) == 2 and r.received[0].client_port == r.received[1].client_port

        # The rules change under the running worker: the next round checks the URL again and does not
        # use the kept connection to the now-forbidden address.
        services.settings = replace(services.settings, webhook_allow_private=False)
        _submit(client, make_user, subject__phone="+923007654329", subject__cnic="17301-7654329-5")
        pipeline.drain()
        assert notifications.deliver_due(services, sender=sender)["pending"] == 1
        sender.close()
    assert len(r.received) == 2
    last = _rows(services)[-1]
    assert (last.last_error or "").startswith("webhook URL refused: only https://")


def test_a_kept_connection_looks_its_url_up_again_every_recheck_interval_not_every_round(
    services: Services,
    pipeline: InProcessPipeline,
    add_partner: Any,
    client: Any,
    make_user: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_partner()
    lookups: list[str] = []
    real_check = webhooks.check_url

    def counted(url: str, **kwargs: Any) -> webhooks.Target:
        lookups.append(url)
        return real_check(url, **kwargs)

    monkeypatch.setattr(webhooks, "check_url", counted)
    ticks = [1000.0]
    sender = notifications.Sender(services, clock=lambda: ticks[0])
    with webhook_receiver(keep_alive=True) as r:
        r.secret = register_webhook(services, PARTNER_ID, r.url)["secret"]
        lookups.clear()  # the registration's own check

        def one_round(i: int) -> None:
            _submit(client, make_user, subject__phone=f"+92300765433{i}", subject__cnic=f"17301-765433{i}-5")
            pipeline.drain()
            assert notifications.deliver_due(services, sender=sender)["delivered"] == 1

        for i in range(3):  # three rounds within the interval: one lookup, when the connection opened
            one_round(i)
            ticks[0] += 5
        assert len(lookups) == 1
        # The interval since the first look-up has passed (and the connection was used 20 s ago, so it is
        # still kept): looked up again.
        ticks[0] = 1000.0 + notifications.Sender.RECHECK_SECONDS
        one_round(3)
        assert len(lookups) == 2
        one_round(4)
        assert len(lookups) == 2
        sender.close()
    # Every round used the one kept connection: the later look-up still led to the same address.
    assert len(r.received) == 5 and len({x.client_port for x in r.received}) == 1


def test_the_cli_registers_a_webhook_prints_the_secret_once_and_stores_it_sealed(
    home: Path, services: Services, add_partner: Any
) -> None:
    add_partner()
    refused = cli(base_env(home), "partners", "webhook", PARTNER_ID, "http://127.0.0.1:9/hook", check=False)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: webhook URL refused: only https:// URLs receive webhooks (url: not allowed)"
    ]
    loopback = cli(base_env(home), "partners", "webhook", PARTNER_ID, "https://127.0.0.1:9/hook", check=False)
    assert loopback.returncode == 2
    assert loopback.stderr.splitlines() == [
        "error: webhook URL refused: 127.0.0.1 resolves to a loopback or private address "
        "(allowed only with REFERRAL_WEBHOOK_ALLOW_PRIVATE=1) (url: not allowed)"
    ]

    env = base_env(home, REFERRAL_WEBHOOK_ALLOW_PRIVATE="1")
    result = cli(env, "partners", "webhook", PARTNER_ID, "http://127.0.0.1:9/hook")
    printed = json.loads(result.stdout)
    assert printed["secret"].startswith("whsec_") and printed["partner_id"] == PARTNER_ID
    assert printed["events"] == ["assignment.offered", "assignment.withdrawn", "followup.due", "followup.overdue"]
    with services.uow() as uow:
        row = uow.session.scalars(select(WebhookEndpoint)).one()
        assert printed["secret"].encode() not in row.secret_ct
        assert printed["secret"][6:].encode() not in row.secret_ct
    missing = cli(env, "partners", "webhook", "no-such-partner", "http://127.0.0.1:9/hook", check=False)
    assert missing.returncode == 2 and missing.stderr.splitlines() == ["error: no partner with id no-such-partner"]
    # The one registration is on record, by the operator at the command line, naming the partner only.
    [(operator, outcome, details)] = _on_record(services, "partner.webhook_register")
    assert operator.startswith("os:") and outcome == "allowed"
    assert details == {"fields": [], "partner_id": PARTNER_ID, "via": "cli"}


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_time_out_not_held_on_to(
    services: Services, pipeline: InProcessPipeline, receiver: WebhookReceiver, client: Any, make_user: Any
) -> None:
    # Each byte comes well within the 1 s time-out, so only a limit on the whole answer ends it: without
    # one, a partner's system could hold the notify worker, and every other partner's notices, for hours.
    services.settings = replace(services.settings, webhook_timeout_seconds=1)
    receiver.trickle_seconds = 6.0
    _submit(client, make_user)
    pipeline.drain()
    started = time.monotonic()
    assert notifications.deliver_due(services) == {"pending": 1, "delivered": 0, "parked": 0}
    assert time.monotonic() - started < 3.0
    [row] = _rows(services)
    assert (row.last_error, row.last_status, row.attempts) == ("timed out", None, 1)


def test_a_receiver_that_answers_slowly_gets_one_time_out_of_a_round_and_the_other_partners_are_sent(
    services: Services,
    pipeline: InProcessPipeline,
    receiver: WebhookReceiver,
    add_partner: Any,
    client: Any,
    make_user: Any,
) -> None:
    # Each answer comes within the 2 s time-out, so none fails: without a share per endpoint, a partner
    # answering slowly would take the round (up to half the lease) from every other partner's notices.
    services.settings = replace(services.settings, webhook_timeout_seconds=2)
    receiver.delays = [1.2, 1.2, 1.2]
    add_partner(id="p-legal", name="Peshawar Legal Aid", services=["legal_aid"])
    with webhook_receiver() as other:
        other.secret = register_webhook(services, "p-legal", other.url)["secret"]
        for i in range(3):
            _submit(client, make_user, subject__phone=f"+92300765432{i}", subject__cnic=f"17301-765432{i}-5")
        _submit(client, make_user, needs=["legal_aid"], subject__phone="+923007654329", subject__cnic="17301-7654329-5")
        pipeline.drain()

        counts = notifications.deliver_due(services)
        assert counts == {"pending": 0, "delivered": 3, "parked": 0}
        assert len(receiver.received) == 2  # 2.4 s of posts: its share is used up, the third waits
        assert len(other.received) == 1 and other.received[0].error is None
        waiting = [r for r in _rows(services) if r.status == "pending"]
        assert [(r.partner_id, r.attempts, r.last_error) for r in waiting] == [(PARTNER_ID, 0, None)]

        assert notifications.deliver_due(services)["delivered"] == 1  # the next round, at once
        assert len(receiver.received) == 3
