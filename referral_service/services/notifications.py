"""Notifications to partners: webhooks and e-mail, from the events, with retries and a record of each.

1. The event's own transaction writes nothing for this: the partner notice it puts in the outbox (for
   the partner's queue) is marked `notify_pending` when partners' systems hear of its type, so it
   commits with the offer or not at all, at no further cost to the router or the deadline scheduler.
2. `deliver_due` (the notify worker's round, with the time passed in) leases due retries and takes up
   pending notices in one transaction, committed before sending (a killed worker's rows come due again
   once the lease ends: at least once): one `Notification` row per channel the partner has, with the
   payload fixed there: identifiers, service, risk level, due time and the case page link, all from
   the event. Nothing personal is read, so nothing personal can be written. The row's id is the
   `webhook-id`, the same on every retry. Then it sends them (one connection per endpoint, its secret
   opened once; an endpoint whose posts took one time-out in all waits for the next round, so a slow
   receiver cannot take a round from the others) and records every answer of the round in one
   transaction. A failure or time-out is
   retried with exponential back-off and full jitter, the first retry within 30 seconds, for at least
   `RETRY_FOR` (a day); after that the row is parked with the reason. Admins list a partner's recent
   deliveries and replay one; `prune` deletes old rows.
"""

from __future__ import annotations

import logging
import random
import secrets
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, true, update

from referral_service.db.models import Notification, OutboxMessage, Partner, Referral, WebhookEndpoint
from referral_service.db.session import READ_ONLY
from referral_service.domain import events
from referral_service.domain.access import Action
from referral_service.domain.errors import NotFound
from referral_service.domain.model import Actor
from referral_service.services import mail, webhooks
from referral_service.services.authorization import authorize
from referral_service.services.common import clamp_limit

if TYPE_CHECKING:
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


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Wait before retry number `attempts` (1 = the first retry): 30 s x 2^(n-1), capped at an hour,
    with full jitter in its upper half (so receivers are not hit by every sender at once)."""
    ceiling = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_BACKOFF)
    return ceiling * (0.5 + 0.5 * rng())


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


# -- 1. from the outbox's partner notices to notification rows (in the notify worker's round) ------
_TABLE = cast(Table, Notification.__table__)
_N = _TABLE.c
_OUTBOX = cast(Table, OutboxMessage.__table__)
_O = _OUTBOX.c
_E = WebhookEndpoint.__table__.c
_P = Partner.__table__.c
_INSERT = insert(_TABLE)
# The partner notices not yet taken up, oldest first (the partial index holds only these). PostgreSQL
# skips rows another notify worker is taking up; a relay publishing the same rows waits at most for
# this short transaction, and never the other way round (this one never waits for a lock).
_NOTICES = select(_O.id, _O.body).where(_O.notify_pending == true()).order_by(_O.id).limit(bindparam("limit"))
_NOTICES_SKIP_LOCKED = _NOTICES.with_for_update(skip_locked=True, of=_OUTBOX)
_TAKEN = update(_OUTBOX).where(_O.id.in_(bindparam("ids", expanding=True))).values(notify_pending=False)
# The channels of the partners a round's notices are for, read once per round.
_CHANNELS = (
    select(
        _P.id, _P.contact_email, _P.notify_language,
        _E.active, _E.events, _E.url, _E.id.label("endpoint_id"), _E.secret_ct,
    )
    .select_from(Partner.__table__.outerjoin(WebhookEndpoint.__table__, _E.partner_id == _P.id))
    .where(_P.id.in_(bindparam("ids", expanding=True)))
)  # fmt: skip
_RISK_OF = select(Referral.id, Referral.risk_level).where(Referral.id.in_(bindparam("ids", expanding=True)))
# Rows already written for these events: a repeated or tampered notice must not make every round fail
# on the unique key (it would stop all notifications); it is skipped instead.
_EXISTING = select(_N.channel, _N.partner_id, _N.event_id).where(_N.event_id.in_(bindparam("ids", expanding=True)))


def _payload(body: dict[str, Any], public_url: str, risk_of: dict[str, str]) -> dict[str, Any]:
    """What the partner's system is sent: the event's identifiers, categories and times, nothing else
    (nothing personal is in the event, so nothing personal can be sent)."""
    kind = body["type"]
    referral_id = body["referral_id"]
    data: dict[str, Any] = {
        "event_id": body["event_id"],
        "assignment_id": body["assignment_id"],
        "referral_id": referral_id,
        "partner_id": body["partner_id"],
        "service": body.get("service"),
        # A withdrawal does not carry the risk level: the referral's, read for the round.
        "risk_level": body.get("risk_level") or risk_of.get(referral_id),
        "due_at": body.get("accept_by") if kind == events.AssignmentOffered.routing_key else body.get("due_at"),
        "url": f"{public_url}/referrals/{referral_id}",
    }
    for extra in ("deadline_id", "kind", "reason"):
        value = body.get(extra)
        if isinstance(value, str):
            data[extra] = value
    return {"type": kind, "timestamp": body["occurred_at"], "data": data}


def _usable(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("type") in webhooks.WEBHOOK_EVENTS
        and all(isinstance(body.get(k), str) for k in ("event_id", "referral_id", "partner_id", "assignment_id"))
        and isinstance(body.get("occurred_at"), str)
    )


Todo = list[tuple[dict[str, Any], list[tuple[str, Any, Any]]]]  # (notice body, its channels)


def _take_up(
    connection: Connection, services: Services, now: datetime, until: datetime, limit: int
) -> tuple[int, list[Claimed]]:
    """Turn up to `limit` pending partner notices into notification rows, one per channel the partner
    has now, and mark the notices taken, in the caller's transaction. The rows due at once are written
    already leased to this round and returned, ready to send; the others (digests) wait for their hour.
    Returns how many notices were taken up and the leased rows."""
    query = _NOTICES_SKIP_LOCKED if connection.dialect.name == "postgresql" else _NOTICES
    notices = connection.execute(query, {"limit": limit}).all()
    if not notices:
        return 0, []
    usable = [n.body for n in notices if _usable(n.body)]
    if len(usable) < len(notices):
        # A damaged row fails alone: it is taken (never retried for ever), and only counted in the log.
        log.warning("notify: %d partner notice(s) unreadable, skipped", len(notices) - len(usable))
    partners = {b["partner_id"] for b in usable}
    channels = {r.id: r for r in connection.execute(_CHANNELS, {"ids": sorted(partners)})} if partners else {}
    smtp = services.settings.smtp is not None
    todo: Todo = []
    for body in usable:
        found = channels.get(body["partner_id"])
        if found is None:
            continue  # the partner is gone
        kind = body["type"]
        mail_to = (found.contact_email, found.notify_language) if smtp and found.contact_email else None
        if kind in DIGEST_EVENTS and mail_to is not None:
            _add_to_digest(connection, now, body["partner_id"], body["event_id"], body["referral_id"])
        wanted: list[tuple[str, Any, Any]] = []
        if found.active and found.url is not None and kind in (found.events or []):
            wanted.append((WEBHOOK, (found.url, found.endpoint_id, bytes(found.secret_ct)), None))
        if kind in EMAIL_EVENTS and mail_to is not None:
            wanted.append((EMAIL, None, mail_to))
        if wanted:
            todo.append((body, wanted))
    rows, claimed = _rows_for(connection, services.settings.public_url, todo, now, until) if todo else ([], [])
    if rows:
        connection.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
    connection.execute(_TAKEN, {"ids": [n.id for n in notices]})
    return len(notices), claimed


def _rows_for(
    connection: Connection, public_url: str, todo: Todo, now: datetime, until: datetime
) -> tuple[list[dict[str, Any]], list[Claimed]]:
    """The notification rows for the notices that have channels, already leased to this round, and what
    sending them needs. An event that already has its row on a channel is skipped."""
    missing_risk = sorted({b["referral_id"] for b, _ in todo if not b.get("risk_level")})
    risk_of = {r.id: r.risk_level for r in connection.execute(_RISK_OF, {"ids": missing_risk})} if missing_risk else {}
    seen = {tuple(r) for r in connection.execute(_EXISTING, {"ids": sorted({b["event_id"] for b, _ in todo})})}
    rows: list[dict[str, Any]] = []
    claimed: list[Claimed] = []
    for body, wanted in todo:
        payload = _payload(body, public_url, risk_of)
        for channel, endpoint, contact in wanted:
            key = (channel, body["partner_id"], body["event_id"])
            if key in seen:
                log.warning("notify: a second notice for event %s (%s) skipped", body["event_id"], channel)
                continue
            seen.add(key)
            message_id = new_message_id()
            rows.append(
                {
                    "id": message_id,
                    "partner_id": body["partner_id"],
                    "channel": channel,
                    "event_id": body["event_id"],
                    "event_type": body["type"],
                    "payload": payload,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": until,  # leased to this round from the start
                    "retry_since": now,
                    "created_at": now,
                }
            )
            claimed.append(Claimed(message_id, body["partner_id"], channel, payload, 0, now, endpoint, contact))
    return rows, claimed


def digest_time(now: datetime) -> datetime:
    """When the digest that an overdue reminder at `now` joins is sent: the next DIGEST_HOUR_UTC."""
    at = now.replace(hour=DIGEST_HOUR_UTC, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


# The partner's digest for a day, locked (PostgreSQL) so two notify workers adding to it do not lose
# each other's reminders.
_DIGEST_ROW = (
    select(_N.id, _N.payload)
    .where(_N.channel == DIGEST, _N.partner_id == bindparam("partner_id"), _N.event_id == bindparam("key"))
    .with_for_update()
)
_DIGEST_PAYLOAD = update(_TABLE).where(_N.id == bindparam("b_id")).values(payload=bindparam("b_payload"))


def _add_to_digest(connection: Connection, now: datetime, partner_id: str, event_id: str, referral_id: str) -> None:
    send_at = digest_time(now)
    key = f"digest-{send_at.date().isoformat()}"
    row = connection.execute(_DIGEST_ROW, {"partner_id": partner_id, "key": key}).first()
    if row is None:
        connection.execute(
            _INSERT,
            {
                "id": new_message_id(),
                "partner_id": partner_id,
                "channel": DIGEST,
                "event_id": key,
                "event_type": events.FollowUpOverdue.routing_key,
                "payload": {"event_ids": [event_id], "referral_ids": [referral_id]},
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": send_at,
                "retry_since": send_at,
                "created_at": now,
            },
        )
        return
    payload = dict(row.payload)
    if event_id in payload.get("event_ids", []):
        return
    payload["event_ids"] = [*payload.get("event_ids", []), event_id]
    payload["referral_ids"] = sorted({*payload.get("referral_ids", []), referral_id})
    connection.execute(_DIGEST_PAYLOAD, {"b_id": row.id, "b_payload": payload})


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


# The due rows with what sending them needs, in one statement built once (per dialect: PostgreSQL
# skips the rows another worker is leasing).
_DUE = (
    select(
        _N.id, _N.partner_id, _N.channel, _N.payload, _N.attempts, _N.retry_since,
        _P.contact_email, _P.notify_language, _E.url, _E.id.label("endpoint_id"), _E.secret_ct,
    )
    .select_from(_TABLE.outerjoin(Partner.__table__, _P.id == _N.partner_id))
    .outerjoin(WebhookEndpoint.__table__, (_E.partner_id == _N.partner_id) & _E.active.is_(True))
    .where(_N.status == PENDING, _N.next_attempt_at <= bindparam("now"))
    .order_by(_N.next_attempt_at)
    .limit(bindparam("limit"))
)  # fmt: skip
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True, of=_TABLE)
_LEASE = update(_TABLE).where(_N.id.in_(bindparam("ids", expanding=True))).values(next_attempt_at=bindparam("until"))


def _claim(services: Services, now: datetime, limit: int) -> list[Claimed]:
    return _claim_round(services, now, limit)[1]


def _claim_round(services: Services, now: datetime, limit: int) -> tuple[bool, list[Claimed]]:
    """Lease what is due, in one transaction committed before anything is sent (if this worker dies,
    its rows come due again when the lease ends): first the retries that are due, with their
    endpoints and contacts, then, up to `limit`, the partner notices not yet taken up. Returns whether
    the round was full (more may be waiting) and the leased rows."""
    until = now + timedelta(seconds=services.settings.notify_lease_seconds)
    # A Core transaction (committed on leaving, rolled back on an error): nothing here is ORM state.
    with services.engine.begin() as connection:
        query = _DUE_SKIP_LOCKED if connection.dialect.name == "postgresql" else _DUE
        rows = connection.execute(query, {"now": now, "limit": limit}).all()
        if rows:
            connection.execute(_LEASE, {"ids": [r.id for r in rows], "until": until})
        taken, fresh = _take_up(connection, services, now, until, limit - len(rows)) if len(rows) < limit else (0, [])
    retries = [
        Claimed(
            r.id,
            r.partner_id,
            r.channel,
            dict(r.payload),
            r.attempts,
            r.retry_since,
            (r.url, r.endpoint_id, bytes(r.secret_ct)) if r.channel == WEBHOOK and r.url is not None else None,
            (r.contact_email, r.notify_language) if r.channel in (EMAIL, DIGEST) and r.contact_email else None,
        )
        for r in rows
    ]
    return len(rows) + taken >= limit, retries + fresh


class Sender:
    """Sends the rows of the notify worker's rounds. It lives as long as the worker: each endpoint's
    signer is made once from its opened secret, and its connection is kept alive across rounds (no
    new TCP and TLS handshake per round) as long as the receiver allows and its URL, checked again
    at least every `RECHECK_SECONDS` and whenever the rules change, still leads to the same address."""

    IDLE_SECONDS = 30.0  # connections unused this long are closed (receivers close theirs sooner or later)
    # A kept connection is pinned to the address that passed, so a later DNS answer cannot redirect it;
    # the URL is looked up again this often to follow a receiver that moved (or now resolves to a
    # refused address), not once per round, which costs a lookup per round at every rate.
    RECHECK_SECONDS = 30.0

    def __init__(self, services: Services, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.services = services
        self.now = services.clock.now()
        self._clock = clock
        self._signers: dict[tuple[str, bytes], webhooks.Signer] = {}
        self._connections: dict[str, tuple[webhooks.Connection, float]] = {}
        # endpoint id -> (when its URL was last checked, under which rule)
        self._checked: dict[str, tuple[float, bool]] = {}
        self._broken: dict[str, str] = {}  # endpoint id -> why it could not be reached this round
        self._spent: dict[str, float] = {}  # endpoint id -> seconds its posts took this round

    def begin_round(self, now: datetime) -> None:
        self.now = now
        self._broken.clear()
        self._spent.clear()
        idle_since = self._clock() - self.IDLE_SECONDS
        for endpoint_id, (connection, used_at) in list(self._connections.items()):
            if used_at < idle_since:
                connection.close()
                del self._connections[endpoint_id]
                self._checked.pop(endpoint_id, None)

    def defer(self, row: Claimed) -> bool:
        """Whether the row waits for the next round (no attempt counted): its endpoint has had its share
        of this one, one time-out. A receiver that answers each post just within the time-out must not
        take the whole round from every other partner's notices."""
        if row.channel != WEBHOOK or row.endpoint is None or row.endpoint[1] in self._broken:
            return False  # an unreachable endpoint's rows fail at once and back off (`_webhook`)
        return self._spent.get(row.endpoint[1], 0.0) >= self.services.settings.webhook_timeout_seconds

    def send(self, row: Claimed) -> Outcome:
        if row.channel == WEBHOOK:
            return self._webhook(row)
        if row.channel in (EMAIL, DIGEST):
            return self._mail(row)
        return Outcome(False, error=f"unknown channel {row.channel}")

    def _connection(self, endpoint_id: str, url: str) -> webhooks.Connection:
        held = self._connections.get(endpoint_id)
        connection = held[0] if held is not None else None
        at = self._clock()
        rule = self.services.settings.webhook_allow_private
        checked = self._checked.get(endpoint_id)
        due = checked is None or at - checked[0] >= self.RECHECK_SECONDS or checked[1] != rule
        due = due or (connection is not None and connection.refused)  # a refused URL is looked at every round
        # The kept connection is used only if its URL, checked again when due (DNS may have changed, or
        # the rules), still goes to the address that passes.
        if connection is not None and (
            connection.url != url or (due and not connection.still_leads_to_checked_address(self.services))
        ):
            connection.close()
            connection = None
        if connection is None:
            connection = webhooks.Connection(self.services, url)  # checks the URL
            due = True
        if due:
            self._checked[endpoint_id] = (at, rule)
        self._connections[endpoint_id] = (connection, at)
        return connection

    def _webhook(self, row: Claimed) -> Outcome:
        if row.endpoint is None:
            return Outcome(False, error="the partner has no active webhook endpoint")
        url, endpoint_id, sealed = row.endpoint
        broken = self._broken.get(endpoint_id)
        if broken is not None:
            # One unreachable receiver must not hold up everyone else's for a time-out per row.
            return Outcome(False, error=f"not sent: {broken} on an earlier message of this round"[:200])
        key = (endpoint_id, sealed)  # a re-registered webhook has a new sealed secret
        signer = self._signers.get(key)
        if signer is None:
            signer = self._signers[key] = webhooks.Signer(webhooks.open_secret(self.services, endpoint_id, sealed))
        started = self._clock()
        connection = self._connection(endpoint_id, url)
        answer = connection.post(signer, row.id, webhooks.body_text(row.payload), at=self.now)
        self._spent[endpoint_id] = self._spent.get(endpoint_id, 0.0) + self._clock() - started
        if answer.status is None:
            self._broken[endpoint_id] = answer.error or "failed"
        return Outcome(answer.ok, answer.status, answer.error)

    def _mail(self, row: Claimed) -> Outcome:
        settings = self.services.settings
        relay = settings.smtp
        if relay is None or row.contact is None:
            return Outcome(False, error="no SMTP relay or no contact address")
        to, language = row.contact
        data = row.payload.get("data", {})
        message = (
            mail.compose_digest(
                sender=settings.smtp_from,
                to=to,
                language=language,
                url=f"{settings.public_url}/inbox",
                overdue=len(row.payload.get("event_ids", [])),
                cases=len(row.payload.get("referral_ids", [])),
                message_id=row.id,
            )
            if row.channel == DIGEST
            else mail.compose(
                sender=settings.smtp_from,
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

    def close(self) -> None:
        for connection, _ in self._connections.values():
            connection.close()
        self._connections.clear()


def _outcome_values(row: Claimed, outcome: Outcome, now: datetime, rng: Callable[[], float]) -> dict[str, Any]:
    """The row's new columns, keyed as `_RECORD` binds them."""
    attempts = row.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "last_status": outcome.status}
    if outcome.ok:
        values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None, last_error=None)
    else:
        error = (outcome.error or "failed")[:200]
        if now - row.retry_since >= RETRY_FOR:
            values.update(status=PARKED, delivered_at=None, next_attempt_at=None, last_error=error)
            log.warning("notify: %s %s parked after %d attempts: %s", row.channel, row.id, attempts, error)
        else:
            next_at = now + backoff(attempts, rng)
            values.update(status=PENDING, delivered_at=None, next_attempt_at=next_at, last_error=error)
    return {"b_id": row.id, "b_retry_since": row.retry_since, **{f"v_{k}": v for k, v in values.items()}}


_OUTCOME_COLUMNS = (
    "status",
    "attempts",
    "last_attempt_at",
    "last_status",
    "delivered_at",
    "next_attempt_at",
    "last_error",
)
# Only while still pending and not replayed meanwhile (a replay moves retry_since).
_RECORD = (
    update(_TABLE)
    .where(_N.id == bindparam("b_id"), _N.status == PENDING, _N.retry_since == bindparam("b_retry_since"))
    .values({name: bindparam(f"v_{name}") for name in _OUTCOME_COLUMNS})
)
_RELEASE = update(_TABLE).where(_N.id == bindparam("b_id"), _N.status == PENDING)


def _record(services: Services, results: list[dict[str, Any]], unsent: list[str], now: datetime) -> None:
    """Every answer of the step in one transaction (a worker killed before it re-sends them, with the
    same webhook-id: at least once); rows the step had no time for are due again at once."""
    with services.engine.begin() as connection:
        if results:
            connection.execute(_RECORD, results)
        if unsent:
            connection.execute(_RELEASE.values(next_attempt_at=now), [{"b_id": i} for i in unsent])


class RoundCounts(dict[str, int]):
    """A round's rows per resulting status; `more` if the round took a full batch (more may be due)."""

    more: bool = False


def deliver_due(
    services: Services,
    now: datetime | None = None,
    *,
    limit: int | None = None,
    rng: Callable[[], float] = random.random,
    elapsed: Callable[[], float] = time.monotonic,
    sender: Sender | None = None,
) -> RoundCounts:
    """One round of the notify worker: send what is due at `now`; counts per resulting status. The
    worker passes its long-lived `sender`; without one, the round has its own.

    The round stops sending once half the lease has gone by (slow receivers), so no row is still being
    sent when its lease ends and another worker could take it."""
    now = now or services.clock.now()
    counts = RoundCounts({PENDING: 0, DELIVERED: 0, PARKED: 0})
    counts.more, rows = _claim_round(services, now, limit or services.settings.notify_batch)
    if not rows:
        return counts
    started, budget = elapsed(), services.settings.notify_lease_seconds / 2
    own = sender is None
    sender = sender or Sender(services)
    sender.begin_round(now)
    results: list[dict[str, Any]] = []
    unsent: list[str] = []
    try:
        for row in rows:
            if elapsed() - started > budget or sender.defer(row):
                unsent.append(row.id)
                continue
            try:
                outcome = sender.send(row)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the others
                outcome = Outcome(False, error=f"failed ({type(exc).__name__})")
            results.append(_outcome_values(row, outcome, now, rng))
    finally:
        if own:
            sender.close()
    _record(services, results, unsent, now)
    for values in results:
        counts[values["v_status"]] += 1
    return counts


def prune(services: Services, now: datetime | None = None, *, batch: int = 1000) -> int:
    """Delete delivered rows older than the retention period, and parked ones older than twice that
    (admins need longer to notice and replay those); returns how many went."""
    now = now or services.clock.now()
    keep = timedelta(days=services.settings.notification_retention_days)
    total = 0
    for status, before in ((DELIVERED, now - keep), (PARKED, now - 2 * keep)):
        while True:
            with services.uow() as uow:
                ids = select(_N.id).where(_N.status == status, _N.created_at < before).limit(batch)
                done = uow.session.connection().execute(delete(_TABLE).where(_N.id.in_(ids)))
                uow.commit()
            total += done.rowcount or 0
            if (done.rowcount or 0) < batch:
                break
    return total


_NEXT_DUE = select(_N.next_attempt_at).where(_N.status == PENDING).order_by(_N.next_attempt_at).limit(1)


def next_due(services: Services) -> datetime | None:
    # A read on its own connection: on SQLite a deferred transaction, so the worker's wait after every
    # round does not take the write lock that intake queues on.
    with services.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        due: datetime | None = connection.execute(_NEXT_DUE).scalar()
        return due


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
