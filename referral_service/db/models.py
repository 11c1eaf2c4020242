"""Typed SQLAlchemy models.

Columns ending in `_ct` hold field ciphertexts (see `referral_service.crypto.envelope`); they
are written and read only through the vault (`referral_service.services.vault`), never directly by
a view. Everything else is identifiers, categories and timestamps.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON, bytes: LargeBinary}


class CryptoMeta(Base):
    __tablename__ = "crypto_meta"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class SubjectKey(Base):
    """A subject's data key, stored only wrapped by a KEK. Destroying it erases the subject."""

    __tablename__ = "subject_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(36), index=True)
    kek_id: Mapped[str | None] = mapped_column(String(64), index=True)
    wrapped: Mapped[bytes | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    destroyed_at: Mapped[datetime | None]


class Subject(Base):
    __tablename__ = "subjects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key_id: Mapped[str] = mapped_column(String(36))
    full_name_ct: Mapped[bytes | None]
    date_of_birth_ct: Mapped[bytes | None]
    sex_ct: Mapped[bytes | None]
    cnic_ct: Mapped[bytes | None]
    phone_ct: Mapped[bytes | None]
    address_ct: Mapped[bytes | None]
    # Routing needs these in the clear; they are coarse (a district, a language, under-18 or not).
    province: Mapped[str] = mapped_column(String(80))
    district: Mapped[str] = mapped_column(String(80))
    preferred_language: Mapped[str | None] = mapped_column(String(8))
    is_minor: Mapped[bool | None]
    # For aggregate statistics only, written at intake from what the caseworker entered (the sealed
    # fields are never opened for counting) and cleared when the subject is erased: the age band at
    # referral (e.g. "18-24") and the sex category (female, male, other, undisclosed). Coarse like
    # the district and the under-18 flag above; never shown with a record.
    stat_age_band: Mapped[str | None] = mapped_column(String(8))
    stat_sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_at: Mapped[datetime | None]
    # Set only when a supervisor confirms a possible duplicate: subjects sharing it are one person for
    # supervisors' views and statistics. Each referral still keeps its own subject row, so no data
    # (and no consent) ever moves from one referral to another.
    person_id: Mapped[str | None] = mapped_column(String(36), index=True)
    __table_args__ = (
        # The statistics join a period's referrals to their subjects for these columns: read from this
        # index alone, not from the rows with every sealed field (migration 0011).
        Index("ix_subjects_statistics", "id", "province", "district", "stat_sex", "stat_age_band"),
    )


class PossibleDuplicate(Base):
    """Two subjects whose CNIC or phone match: a question for supervisors, never an automatic link."""

    __tablename__ = "possible_duplicates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    earlier_subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    earlier_referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"))
    matched_on: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    decided_by: Mapped[str | None] = mapped_column(String(36))
    decided_at: Mapped[datetime | None]
    __table_args__ = (UniqueConstraint("subject_id", "earlier_subject_id", name="uq_possible_duplicates_pair"),)


class BlindIndex(Base):
    """Truncated keyed hashes of CNIC/phone; several rows per (column, version) during re-indexing."""

    __tablename__ = "blind_indexes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    column: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    value: Mapped[int] = mapped_column(Integer)
    __table_args__ = (
        Index("ix_blind_indexes_lookup", "column", "version", "value"),
        UniqueConstraint("subject_id", "column", "version", name="uq_blind_indexes_subject_column_version"),
    )


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Password guessing: kept in the database so the back-off holds across gunicorn workers and hosts.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None]
    # The inbox page's visits: the latest, and the one before it (what "new since your last visit" means
    # while the user pages through this visit).
    inbox_seen_at: Mapped[datetime | None]
    inbox_seen_before: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser. The cookie carries a random id; only its digest is kept, and ending the row
    (logout, revoke, idle or absolute timeout) ends the session wherever the cookie was copied to."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    user: Mapped[User] = relationship(lazy="joined")


class Partner(Base):
    __tablename__ = "partners"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    networks: Mapped[list[str]] = mapped_column(default=list)
    services: Mapped[list[str]] = mapped_column(default=list)
    provinces: Mapped[list[str]] = mapped_column(default=list)
    districts: Mapped[list[str]] = mapped_column(default=list)
    languages: Mapped[list[str]] = mapped_column(default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    accepts_minors: Mapped[bool] = mapped_column(Boolean, default=False)
    staff_sex: Mapped[list[str]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The organisation's own contact address (not a person's): where "a new case is waiting" goes.
    contact_email: Mapped[str | None] = mapped_column(String(254))
    notify_language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    offers_made: Mapped[int] = mapped_column(Integer, default=0)
    offers_accepted: Mapped[int] = mapped_column(Integer, default=0)
    response_seconds_total: Mapped[int] = mapped_column(BigInteger, default=0)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Referral(Base):
    __tablename__ = "referrals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    caseworker_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    risk_level: Mapped[str] = mapped_column(String(16))
    needs: Mapped[list[str]]
    incident_type: Mapped[str | None] = mapped_column(String(80))
    incident_ct: Mapped[bytes | None]
    staff_sex_preference: Mapped[str] = mapped_column(String(8), default="any")
    consent_given: Mapped[bool] = mapped_column(Boolean)
    consent_method: Mapped[str | None] = mapped_column(String(16))
    consent_share: Mapped[list[str]] = mapped_column(default=list)
    consent_recorded_by: Mapped[str] = mapped_column(String(36))
    consent_recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    consent_withdrawn_at: Mapped[datetime | None]
    linked_existing_subject: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    assignments: Mapped[list[Assignment]] = relationship(
        back_populates="referral", order_by="Assignment.offered_at", lazy="selectin"
    )
    __table_args__ = (
        # The lists' order (newest first) per caseworker and per status: a page is an index range, not a
        # walk of the whole created_at index filtered row by row (migration 0010).
        Index("ix_referrals_caseworker_created", "caseworker_id", "created_at", "id"),
        Index("ix_referrals_status_created", "status", "created_at", "id"),
        # The statistics' period of referrals with what they group by (but the needs, a JSON list that
        # PostgreSQL cannot index): an index range, not the rows with their sealed incident (0011).
        Index("ix_referrals_statistics", "created_at", "subject_id", "risk_level", "status"),
    )


class Assignment(Base):
    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    service: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reasons: Mapped[list[str]] = mapped_column(default=list)
    offered_at: Mapped[datetime] = mapped_column(default=utcnow)
    responded_at: Mapped[datetime | None]
    decline_reason: Mapped[str | None] = mapped_column(String(32))
    note_ct: Mapped[bytes | None]
    close_outcome: Mapped[str | None] = mapped_column(String(32))
    services_delivered: Mapped[list[str] | None] = mapped_column(JSON)
    closed_at: Mapped[datetime | None]
    # Copies for the SLA report, which scans assignments alone (a million rows in well under 2 s):
    # the referral's risk level (it never changes) and when the first follow-up was recorded.
    risk_level: Mapped[str | None] = mapped_column(String(16))
    first_followup_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    referral: Mapped[Referral] = relationship(back_populates="assignments")
    followups: Mapped[list[FollowUp]] = relationship(order_by="FollowUp.recorded_at", lazy="selectin")
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_assignments_offered_at", "offered_at"),
        # The SLA report (migration 0011): the period's assignments already in its groups' order (risk
        # level, partner) with every column it reads, so the counts and the percentiles read this index
        # alone and need no sort of the year's rows by group; and each partner's open cases now.
        Index(
            "ix_assignments_sla",
            "risk_level",
            "partner_id",
            "offered_at",
            "status",
            "decline_reason",
            "responded_at",
            "first_followup_at",
        ),
        Index("ix_assignments_status_partner_risk", "status", "partner_id", "risk_level"),
        # The database itself refuses a second open offer of one service for one referral.
        Index(
            "uq_assignments_open_per_service",
            "referral_id",
            "service",
            unique=True,
            sqlite_where=text("status IN ('offered', 'accepted')"),
            postgresql_where=text("status IN ('offered', 'accepted')"),
        ),
        # Each partner's open assignments, which the router counts before every offer (index-only).
        Index(
            "ix_assignments_open_per_partner",
            "partner_id",
            sqlite_where=text("status IN ('offered', 'accepted')"),
            postgresql_where=text("status IN ('offered', 'accepted')"),
        ),
    )


class FollowUp(Base):
    __tablename__ = "followups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), index=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(64))
    note_ct: Mapped[bytes | None]
    recorded_by: Mapped[str] = mapped_column(String(36))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseNote(Base):
    """Why a referral was withdrawn or re-opened (sealed: notes may mention the person)."""

    __tablename__ = "case_notes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    note_ct: Mapped[bytes | None]
    author_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingDecision(Base):
    """Why a partner was chosen, or why none could be: kept for caseworkers and supervisors."""

    __tablename__ = "routing_decisions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    service: Mapped[str] = mapped_column(String(32))
    chosen_partner_id: Mapped[str | None] = mapped_column(String(64))
    considered: Mapped[list[Any]] = mapped_column(JSON, default=list)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deadline(Base):
    """A timer as a row: the scheduler fires due rows once, however many schedulers run."""

    __tablename__ = "deadlines"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    assignment_id: Mapped[str | None] = mapped_column(ForeignKey("assignments.id"), index=True)
    partner_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    risk_level: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    fired_at: Mapped[datetime | None]
    # When the scheduler must look at the row next (notice, due, next reminder); NULL once it is over.
    # The scheduler reads `wake_at <= now` through this index only: its cost grows with what is due,
    # not with what is open.
    wake_at: Mapped[datetime | None] = mapped_column(index=True)
    noticed_at: Mapped[datetime | None]
    reminders: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    escalated_at: Mapped[datetime | None]
    # Lets the unit of work insert an assignment before the deadline that refers to it.
    assignment: Mapped[Assignment | None] = relationship()


class OutboxMessage(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str | None] = mapped_column(String(36))
    exchange: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]
    # A partner notice that the partner's own systems (webhook, e-mail) must hear of, not yet taken up
    # by the notify worker: it reads its work from here, so the event's own transaction writes nothing
    # more than the outbox row.
    notify_pending: Mapped[bool] = mapped_column(default=False, server_default=false())
    __table_args__ = (
        Index("ix_outbox_pending", "published_at", "id"),
        Index(
            "ix_outbox_notify_pending",
            "id",
            sqlite_where=text("notify_pending = 1"),
            postgresql_where=text("notify_pending = true"),
        ),
        Index("ix_outbox_aggregate", "aggregate_id", "id"),
        UniqueConstraint("event_id", "exchange", name="uq_outbox_event_exchange"),
    )


class ProcessedMessage(Base):
    __tablename__ = "processed_messages"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_mac: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- audit log (see referral_service.audit) ----------------------------------------------------------
class AuditEntry(Base):
    """One audited action, sealed: nothing in it is readable without the keyring.

    Written in the transaction of the action it records; `idx` stays empty until the integrator
    (`referral_service.audit.log.AuditLog.integrate`) sequences the entry into the Merkle tree, in
    its own transaction. The leaf hash covers `at`, the blind indexes and the ciphertexts (the
    entry's canonical bytes, `referral_service.audit.verifier.entry_bytes`), so destroying a
    subject's data key leaves every leaf, and so the tree, verifiable.
    """

    __tablename__ = "audit_entries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7: time-ordered, no sequence to contend on
    at: Mapped[datetime] = mapped_column(index=True)
    # Keyed blind indexes (HMAC under the audit search key): equality search without plaintext.
    actor_bi: Mapped[bytes]
    action_bi: Mapped[bytes]
    referral_bi: Mapped[bytes | None]
    subject_bi: Mapped[bytes | None]
    record_ct: Mapped[bytes]  # who, what, outcome, request: sealed under the audit key
    details_key: Mapped[str] = mapped_column(String(16))  # "audit" or "subject"
    details_ct: Mapped[bytes]  # what was seen or done: under the subject's own key when about a subject
    commitment: Mapped[bytes]  # HMAC of the plaintext under the audit commitment key
    idx: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), unique=True)
    __table_args__ = (
        Index("ix_audit_entries_referral", "referral_bi", "at"),
        Index("ix_audit_entries_subject", "subject_bi", "at"),
        Index("ix_audit_entries_actor", "actor_bi", "at"),
        Index("ix_audit_entries_action", "action_bi", "at"),
    )


# The integrator finds its work through this partial index: only unsequenced entries are in it.
Index(
    "ix_audit_entries_unsequenced",
    AuditEntry.at,
    AuditEntry.id,
    postgresql_where=AuditEntry.idx.is_(None),
    sqlite_where=AuditEntry.idx.is_(None),
)


class AuditNode(Base):
    """A complete subtree of the Merkle tree: (level, index) covers leaves [index*2^level, (index+1)*2^level)."""

    __tablename__ = "audit_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes]


class AuditHead(Base):
    """The tree's current size and root: one row, locked by the integrator that extends it."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    root: Mapped[bytes]
    updated_at: Mapped[datetime]


class AuditCheckpoint(Base):
    """Every signed checkpoint, newest last: a C2SP tlog-checkpoint in a signed note."""

    __tablename__ = "audit_checkpoints"
    size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    root: Mapped[bytes]
    note: Mapped[str] = mapped_column(String(2000))
    signed_at: Mapped[datetime]


__all__ = ["Base", "date"]


class WebhookEndpoint(Base):
    """A partner's own system, to which its offers are posted (Standard Webhooks). One per partner;
    registering again replaces the URL and the signing secret. The secret is sealed (AEAD under a
    key derived from the keyring, bound to this row), never stored in the clear."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret_ct: Mapped[bytes]
    events: Mapped[list[str]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Notification(Base):
    """One message to one partner over one channel (webhook or e-mail), kept until it is delivered
    or parked: the notifications' own outbox. Its id is the `webhook-id`, the same on every retry.
    The payload holds identifiers, categories and times only."""

    __tablename__ = "notifications"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    last_status: Mapped[int | None] = mapped_column(Integer)
    # Retries go on for a day from here: the first enqueueing, or an admin's replay.
    retry_since: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        UniqueConstraint("channel", "partner_id", "event_id", name="uq_notifications_channel_partner_event"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_partner", "partner_id", "created_at"),
    )
