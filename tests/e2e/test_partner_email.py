"""E-mail to a partner's contact address through a real local SMTP server (aiosmtpd), in English or Urdu."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services, bootstrap
from referral_service.config import SmtpRelay
from referral_service.db.models import Notification
from referral_service.services import mail, notifications
from tests.conftest import FakeClock, embedded_settings
from tests.e2e.test_partner_webhooks import PERSONAL
from tests.factories import referral_body
from tests.pipeline import InProcessPipeline
from tests.receivers import Mailbox, free_port, smtp_server

CONTACT = "intake@peshawar-relief.example.org"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def services(home: Path, clock: FakeClock, mailbox: Mailbox) -> Iterator[Services]:
    settings = embedded_settings(
        home,
        REFERRAL_SMTP_URL=f"smtp://127.0.0.1:{mailbox.port}",
        REFERRAL_SMTP_FROM="referrals@van.example.org",
        REFERRAL_PUBLIC_URL="https://referrals.van.example.org/",
    )
    svc = bootstrap(settings, clock=clock)
    yield svc
    svc.dispose()


def _offer(services: Services, client: Any, make_user: Any) -> dict[str, Any]:
    pipeline = InProcessPipeline(services)
    try:
        cw = make_user("caseworker")
        resp = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers)
        assert resp.status_code == 201
        pipeline.drain()
    finally:
        pipeline.close()
    return resp.get_json()


@pytest.mark.parametrize(
    ("language", "subject", "opening"),
    [
        ("en", "A new case is waiting in your inbox", "A new case is waiting in your inbox."),
        ("ur", "آپ کے ان باکس میں ایک نیا کیس منتظر ہے", "آپ کے ان باکس میں ایک نیا کیس منتظر ہے۔"),
    ],
)
def test_a_new_offer_mails_the_partner_in_its_language_with_the_link_and_nothing_about_the_person(
    services: Services,
    mailbox: Mailbox,
    add_partner: Any,
    client: Any,
    make_user: Any,
    language: str,
    subject: str,
    opening: str,
) -> None:
    add_partner(contact_email=CONTACT, notify_language=language)
    referral = _offer(services, client, make_user)
    assert notifications.deliver_due(services)["delivered"] == 1

    [message] = mailbox.messages
    assert mailbox.envelopes == [("referrals@van.example.org", [CONTACT])]
    assert message["Subject"] == subject and message["To"] == CONTACT
    text = message.get_content()
    assert text.startswith(opening)
    assert f"https://referrals.van.example.org/referrals/{referral['id']}" in text
    raw = message.as_string()
    assert not [m for m in [*PERSONAL, "Peshawar", "medical", "bombing"] if m in text + raw]


def test_no_contact_address_means_no_mail_and_a_relay_that_is_down_is_retried(
    home: Path, clock: FakeClock, add_partner: Any, client: Any, make_user: Any, services: Services, mailbox: Mailbox
) -> None:
    add_partner()  # no contact_email
    _offer(services, client, make_user)
    assert notifications.deliver_due(services) == {"pending": 0, "delivered": 0, "parked": 0}
    assert mailbox.messages == []

    down = bootstrap(embedded_settings(home, REFERRAL_SMTP_URL=f"smtp://127.0.0.1:{free_port()}"), clock=clock)
    try:
        add_partner(id="p-two", contact_email=CONTACT)
        _offer(down, client, make_user)
        assert notifications.deliver_due(down)["pending"] == 1
        with down.uow() as uow:
            channels = uow.session.scalars(select(Notification.channel).where(Notification.partner_id == "p-two")).all()
        assert channels == ["email"]
        with down.uow() as uow:
            row = uow.session.scalars(select(Notification).where(Notification.partner_id == "p-two")).one()
            assert row.last_error == "SMTP failed (ConnectionRefusedError)" and row.attempts == 1
    finally:
        down.dispose()


def test_overdue_follow_ups_are_mailed_once_a_day_as_one_digest(
    services: Services, mailbox: Mailbox, add_partner: Any, client: Any, make_user: Any, clock: FakeClock
) -> None:
    from referral_service.services.deadlines import fire_due_deadlines

    add_partner(contact_email=CONTACT, notify_language="en")
    staff = make_user("partner", partner_id="p-peshawar-medical")
    referral = _offer(services, client, make_user)
    assert notifications.deliver_due(services)["delivered"] == 1  # the offer's own mail
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200

    clock.advance(days=3)  # first contact is long overdue
    while fire_due_deadlines(services):
        pass
    pipeline = InProcessPipeline(services)
    try:
        pipeline.drain()
    finally:
        pipeline.close()
    assert notifications.deliver_due(services)["delivered"] == 0  # not before the digest hour
    with services.uow() as uow:
        [digest] = uow.session.scalars(select(Notification).where(Notification.channel == "digest")).all()
        send_at = digest.next_attempt_at
    assert send_at > clock.now() and send_at - clock.now() <= timedelta(days=1) and send_at.hour == 3
    assert notifications.deliver_due(services)["delivered"] == 0
    assert len(mailbox.messages) == 1

    clock.current = send_at
    assert notifications.deliver_due(services)["delivered"] == 1
    digest_mail = mailbox.messages[-1]
    assert digest_mail["Subject"] == "Follow-ups are overdue in your inbox"
    text = digest_mail.get_content()
    assert text.startswith("1 follow-up reminder(s) for 1 case(s) became overdue")
    assert "https://referrals.van.example.org/inbox" in text
    assert referral["id"] not in text
    assert not [m for m in PERSONAL if m in digest_mail.as_string()]


def test_credentials_are_never_sent_to_a_relay_that_offers_no_starttls() -> None:
    # smtp://user:password@host: "STARTTLS when the relay offers it"; one that does not (or whose offer
    # an attacker on the path strips) must not be given the password in the clear.
    message = mail.compose(
        sender="referrals@van.example.org",
        to=CONTACT,
        language="en",
        url="https://x.example/",
        due=None,
        message_id="m1",
    )
    with smtp_server(auth_in_the_clear=True) as box:
        relay = SmtpRelay(host="127.0.0.1", port=box.port, tls=False, username="relay-user", password="relay-secret")
        with pytest.raises(smtplib.SMTPNotSupportedError, match="STARTTLS"):
            mail.send(relay, message)
        assert box.logins == [] and box.messages == []
        mail.send(replace(relay, username=None, password=None), message)  # without credentials it goes
        assert len(box.messages) == 1
