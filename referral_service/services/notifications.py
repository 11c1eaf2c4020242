"""Notifications to partners: webhooks and e-mail, from the events, with retries and a record of each.

1. `enqueue` (the `notify` consumer group's handler, in the consumer's transaction): for an event a
   partner must hear of, one `Notification` row per channel the partner has, with the payload fixed
   there: identifiers, service, risk level, due time and the case page link. Nothing personal is read,
   so nothing personal can be written. The row's id is the `webhook-id`, the same on every retry; the
   unique (channel, partner, event) key makes a redelivered event harmless.
2. `deliver_due` (the notify worker's step, with the time passed in): claims due rows with a lease
   (committed before sending, so a killed worker's rows come due again once the lease ends: at least
   once), sends each, and records the answer. A failure or time-out is retried with exponential
   back-off and full jitter, the first retry within 30 seconds, for at least `RETRY_FOR` (a day); after
   that the row is parked with the reason. Admins list a partner's recent deliveries and replay one.
"""

from __future__ import annotations

import logging
import random
import secrets
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from referral_service.db.models import Assignment, Deadline, Notification, Partner, Referral, WebhookEndpoint
from referral_service.domain import events
from referral_service.domain.access import Action
from referral_service.domain.errors import NotFound
from referral_service.domain.model import Actor
from referral_service.services import mail, webhooks
from referral_service.services.authorization import authorize
from referral_service.services.common import clamp_limit

if TYPE_CHECKING:
    from referral_service.db.session import UnitOfWork
    from referral_service.services.ports import Services

log = logging.getLogger(__name__)

WEBHOOK, EMAIL, DIGEST = "webhook", "email", "digest"
PENDING, DELIVERED, PARKED = "pending", "delivered", "parked"
# E-mail says only "a new case is waiting": it goes for new offers alone.
EMAIL_EVENTS = (events.AssignmentOffered.routing_key,)
# Overdue follow-ups are mailed once a day, as one digest per partner, not one mail per reminder.
DIGEST_EVENTS = (events.FollowUpOverdue.routing_key,)
DIGEST_HOUR_UTC = 3  # 08:00 in Pakistan
RETRY_FOR = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
LEASE = timedelta(minutes=2)
BATCH = 50


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Wait before retry number `attempts` (1 = the first retry): 30 s x 2^(n-1), capped at an hour,
    with full jitter in its upper half (so receivers are not hit by every sender at once)."""
    ceiling = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_BACKOFF)
    return ceiling * (0.5 + 0.5 * rng())


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


# -- 1. from events to notification rows ------------------------------------------------------------
def _due_of(uow: UnitOfWork, event: dict[str, Any]) -> str | None:
    if event.get("accept_by"):
        return str(event["accept_by"])
    deadline_id = event.get("deadline_id")
    if isinstance(deadline_id, str):
        deadline = uow.session.get(Deadline, deadline_id)
        if deadline is not None:
            return deadline.due_at.isoformat()
    if event.get("due_at"):
        return str(event["due_at"])
    return None


def enqueue(uow: UnitOfWork, services: Services, event: dict[str, Any]) -> int:
    """Rows for each channel of the partner the event is for; returns how many were added.

    One query reads the assignment, its referral's risk level, the partner's endpoint and contact;
    the body is built from those identifiers and categories only."""
    kind = str(event.get("type"))
    assignment_id = event.get("assignment_id")
    if kind not in webhooks.WEBHOOK_EVENTS or not isinstance(assignment_id, str):
        return 0
    found = uow.session.execute(
        select(
            Assignment.referral_id,
            Assignment.partner_id,
            Assignment.service,
            Referral.risk_level,
            WebhookEndpoint.active,
            WebhookEndpoint.events,
            Partner.contact_email,
        )
        .join(Referral, Referral.id == Assignment.referral_id)
        .join(Partner, Partner.id == Assignment.partner_id)
        .outerjoin(WebhookEndpoint, WebhookEndpoint.partner_id == Assignment.partner_id)
        .where(Assignment.id == assignment_id)
    ).first()
    if found is None:
        return 0
    if kind in DIGEST_EVENTS and services.settings.smtp is not None and found.contact_email:
        _add_to_digest(uow, services, found.partner_id, str(event.get("event_id")), found.referral_id)
    channels = []
    if found.active and kind in (found.events or []):
        channels.append(WEBHOOK)
    if kind in EMAIL_EVENTS and services.settings.smtp is not None and found.contact_email:
        channels.append(EMAIL)
    event_id = str(event.get("event_id"))
    if channels:
        done = set(
            uow.session.scalars(
                select(Notification.channel).where(
                    Notification.partner_id == found.partner_id,
                    Notification.event_id == event_id,
                    Notification.channel.in_(channels),
                )
            )
        )
        channels = [c for c in channels if c not in done]
    if not channels:
        return 0
    data: dict[str, Any] = {
        "event_id": event_id,
        "assignment_id": assignment_id,
        "referral_id": found.referral_id,
        "partner_id": found.partner_id,
        "service": found.service,
        "risk_level": found.risk_level,
        "due_at": _due_of(uow, event),
        "url": f"{services.settings.public_url}/referrals/{found.referral_id}",
    }
    for extra in ("deadline_id", "kind", "reason"):
        if isinstance(event.get(extra), str):
            data[extra] = event[extra]
    payload = {"type": kind, "timestamp": str(event.get("occurred_at")), "data": data}
    now = services.clock.now()
    uow.session.execute(
        insert(Notification),
        [
            {
                "id": new_message_id(),
                "partner_id": found.partner_id,
                "channel": channel,
                "event_id": event_id,
                "event_type": kind,
                "payload": payload,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "retry_since": now,
                "created_at": now,
            }
            for channel in channels
        ],
    )
    return len(channels)


def digest_time(now: datetime) -> datetime:
    """When the digest that an overdue reminder at `now` joins is sent: the next DIGEST_HOUR_UTC."""
    at = now.replace(hour=DIGEST_HOUR_UTC, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def _add_to_digest(uow: UnitOfWork, services: Services, partner_id: str, event_id: str, referral_id: str) -> None:
    now = services.clock.now()
    send_at = digest_time(now)
    key = f"digest-{send_at.date().isoformat()}"
    row = uow.session.scalars(
        select(Notification).where(
            Notification.channel == DIGEST, Notification.partner_id == partner_id, Notification.event_id == key
        )
    ).first()
    if row is None:
        uow.session.add(
            Notification(
                id=new_message_id(),
                partner_id=partner_id,
                channel=DIGEST,
                event_id=key,
                event_type=events.FollowUpOverdue.routing_key,
                payload={"event_ids": [event_id], "referral_ids": [referral_id]},
                status=PENDING,
                attempts=0,
                next_attempt_at=send_at,
                retry_since=send_at,
                created_at=now,
            )
        )
        return
    payload = dict(row.payload)
    if event_id in payload.get("event_ids", []):
        return
    payload["event_ids"] = [*payload.get("event_ids", []), event_id]
    payload["referral_ids"] = sorted({*payload.get("referral_ids", []), referral_id})
    row.payload = payload


# -- 2. delivering ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Claimed:
    """A due notification, leased to this worker, with what sending it needs (read in the claim)."""

    id: str
    partner_id: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    retry_since: datetime
    endpoint: tuple[str, str, bytes] | None = None  # (url, endpoint id, sealed secret), if active
    contact: tuple[str, str] | None = None  # (address, language)


_N = Notification.__table__.c


def _claim(services: Services, now: datetime, limit: int) -> list[Claimed]:
    """Lease the due rows (committed before anything is sent: if this worker dies, they come due again
    when the lease ends) and read their endpoints and contacts, in one transaction."""
    with services.uow() as uow:
        session = uow.session
        query = (
            select(_N.id, _N.partner_id, _N.channel, _N.payload, _N.attempts, _N.retry_since)
            .where(_N.status == PENDING, _N.next_attempt_at <= now)
            .order_by(_N.next_attempt_at)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        if not rows:
            return []
        session.execute(update(Notification).where(_N.id.in_([r.id for r in rows])).values(next_attempt_at=now + LEASE))
        partner_ids = {r.partner_id for r in rows}
        endpoints = {
            e.partner_id: (e.url, e.id, bytes(e.secret_ct))
            for e in session.execute(
                select(
                    WebhookEndpoint.partner_id, WebhookEndpoint.url, WebhookEndpoint.id, WebhookEndpoint.secret_ct
                ).where(WebhookEndpoint.partner_id.in_(partner_ids), WebhookEndpoint.active.is_(True))
            )
        }
        contacts = {
            p.id: (p.contact_email, p.notify_language)
            for p in session.execute(
                select(Partner.id, Partner.contact_email, Partner.notify_language).where(Partner.id.in_(partner_ids))
            )
            if p.contact_email
        }
        uow.commit()
    return [
        Claimed(
            r.id,
            r.partner_id,
            r.channel,
            dict(r.payload),
            r.attempts,
            r.retry_since,
            endpoints.get(r.partner_id) if r.channel == WEBHOOK else None,
            contacts.get(r.partner_id) if r.channel in (EMAIL, DIGEST) else None,
        )
        for r in rows
    ]


def _send(services: Services, row: Claimed, now: datetime) -> Outcome:
    if row.channel == WEBHOOK:
        if row.endpoint is None:
            return Outcome(False, error="the partner has no active webhook endpoint")
        url, endpoint_id, sealed = row.endpoint
        secret = webhooks.open_secret(services, endpoint_id, sealed)
        answer = webhooks.post(services, url, secret, row.id, webhooks.body_text(row.payload), at=now)
        return Outcome(answer.ok, answer.status, answer.error)
    if row.channel in (EMAIL, DIGEST):
        relay = services.settings.smtp
        if relay is None or row.contact is None:
            return Outcome(False, error="no SMTP relay or no contact address")
        to, language = row.contact
        data = row.payload.get("data", {})
        message = (
            mail.compose_digest(
                sender=services.settings.smtp_from,
                to=to,
                language=language,
                url=f"{services.settings.public_url}/inbox",
                overdue=len(row.payload.get("event_ids", [])),
                cases=len(row.payload.get("referral_ids", [])),
                message_id=row.id,
            )
            if row.channel == DIGEST
            else mail.compose(
                sender=services.settings.smtp_from,
                to=to,
                language=language,
                url=str(data.get("url")),
                due=str(data["due_at"])[:16].replace("T", " ") if data.get("due_at") else None,
                message_id=row.id,
            )
        )
        try:
            mail.send(relay, message)
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(False, error=f"SMTP failed ({type(exc).__name__})")
        return Outcome(True)
    return Outcome(False, error=f"unknown channel {row.channel}")


def _record(services: Services, row: Claimed, outcome: Outcome, now: datetime, rng: Callable[[], float]) -> str:
    attempts = row.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "last_status": outcome.status}
    if outcome.ok:
        status = DELIVERED
        values.update(status=status, delivered_at=now, next_attempt_at=None, last_error=None)
    else:
        error = (outcome.error or "failed")[:200]
        if now - row.retry_since >= RETRY_FOR:
            status = PARKED
            values.update(status=status, next_attempt_at=None, last_error=error)
            log.warning("notify: %s %s parked after %d attempts: %s", row.channel, row.id, attempts, error)
        else:
            status = PENDING
            values.update(next_attempt_at=now + backoff(attempts, rng), last_error=error)
    with services.uow() as uow:
        # Only while still pending and not replayed meanwhile (a replay moves retry_since).
        done = uow.session.execute(
            update(Notification)
            .where(_N.id == row.id, _N.status == PENDING, _N.retry_since == row.retry_since)
            .values(**values)
        )
        uow.commit()
    return status if getattr(done, "rowcount", 1) else "gone"


def deliver_due(
    services: Services, now: datetime | None = None, *, limit: int = BATCH, rng: Callable[[], float] = random.random
) -> dict[str, int]:
    """One step of the notify worker: send what is due at `now`; counts per resulting status."""
    now = now or services.clock.now()
    counts = {PENDING: 0, DELIVERED: 0, PARKED: 0}
    for row in _claim(services, now, limit):
        try:
            outcome = _send(services, row, now)
        except Exception as exc:  # noqa: BLE001 - one bad row must not stop the others
            outcome = Outcome(False, error=f"failed ({type(exc).__name__})")
        status = _record(services, row, outcome, now, rng)
        if status in counts:
            counts[status] += 1
    return counts


def next_due(services: Services) -> datetime | None:
    with services.uow() as uow:
        return uow.session.scalars(
            select(Notification.next_attempt_at)
            .where(Notification.status == PENDING)
            .order_by(Notification.next_attempt_at)
            .limit(1)
        ).first()


# -- what admins see and do ------------------------------------------------------------------------
def delivery_view(row: Notification) -> dict[str, Any]:
    return {
        "id": row.id,
        "partner_id": row.partner_id,
        "channel": row.channel,
        "event_type": row.event_type,
        "event_id": row.event_id,
        "status": row.status,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "last_attempt_at": row.last_attempt_at,
        "next_attempt_at": row.next_attempt_at,
        "delivered_at": row.delivered_at,
    }


def list_deliveries(
    services: Services, actor: Actor, partner_id: str, *, status: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """A partner's most recent deliveries, newest first."""
    authorize(services, actor, Action.READ_DELIVERIES, details={"partner_id": partner_id})
    with services.uow() as uow:
        if uow.session.get(Partner, partner_id) is None:
            raise NotFound("no such partner")
        query = select(Notification).where(Notification.partner_id == partner_id)
        if status:
            query = query.where(Notification.status == status)
        rows = uow.session.scalars(
            query.order_by(Notification.created_at.desc(), Notification.id).limit(clamp_limit(limit))
        ).all()
        return {"items": [delivery_view(r) for r in rows], "next": None}


def replay_delivery(services: Services, actor: Actor, partner_id: str, delivery_id: str) -> dict[str, Any]:
    """Send one delivery again, now, with the same webhook-id (receivers deduplicate on it); it gets
    a fresh day of retries."""
    # The admin's replay is on record through its decision, naming the delivery.
    authorize(services, actor, Action.REPLAY_DELIVERY, details={"partner_id": partner_id, "delivery_id": delivery_id})
    now = services.clock.now()
    with services.uow() as uow:
        row = uow.session.get(Notification, delivery_id)
        if row is None or row.partner_id != partner_id:
            raise NotFound("no such delivery")
        row.status, row.next_attempt_at, row.retry_since = PENDING, now, now
        uow.commit()
        return delivery_view(row)
