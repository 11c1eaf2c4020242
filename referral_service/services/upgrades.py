"""Data upgrades that need the keys, so Alembic cannot do them: `referral-service init` runs them after
the schema is at head. Each works in batches, one transaction per batch, and is safe to run again."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, tuple_

from referral_service.crypto import CryptoError, SubjectErased
from referral_service.db.models import FollowUp, IdempotencyKey, OutboxMessage, Referral, Subject
from referral_service.domain.events import FollowUpRecorded
from referral_service.domain.model import FOLLOWUP_OUTCOMES
from referral_service.services.common import must
from referral_service.services.subjects import purge_old_versions

if TYPE_CHECKING:
    from referral_service.services.ports import Services

log = logging.getLogger(__name__)

BATCH_SIZE = 500
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class UpgradeReport:
    followups_sealed: int = 0
    followup_events_scrubbed: int = 0
    idempotency_keys_dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.followups_sealed or self.followup_events_scrubbed or self.idempotency_keys_dropped)


def run_upgrades(services: Services, batch_size: int = BATCH_SIZE) -> UpgradeReport:
    report = UpgradeReport()
    seal_free_text_followup_outcomes(services, report, batch_size)
    drop_plaintext_idempotency_keys(services, report, batch_size)
    if report.changed:
        # The rewritten rows' old versions still hold the text: overwrite them in the files too.
        report.warnings += purge_old_versions(
            services.engine, rewrite=("followups", "outbox", "idempotency_keys"), vacuum=()
        )
    return report


def seal_free_text_followup_outcomes(services: Services, report: UpgradeReport, batch_size: int = BATCH_SIZE) -> None:
    """Outcomes were free text (in plaintext, in events, kept after erasure): each one outside the fixed
    list moves into the follow-up's sealed note (after any note there) and the outcome becomes `other`.
    For an erased subject the text is dropped: it can no longer be sealed, and must not stay readable."""
    vault = services.vault
    after = ""
    while True:
        with services.uow() as uow:
            rows = uow.session.scalars(
                select(FollowUp)
                .where(FollowUp.outcome.not_in(FOLLOWUP_OUTCOMES), FollowUp.id > after)
                .order_by(FollowUp.id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            after = rows[-1].id
            for followup in rows:
                referral = must(uow.session.get(Referral, followup.referral_id), "referral")
                subject = must(uow.session.get(Subject, referral.subject_id), "subject")
                try:
                    if subject.erased_at is None:
                        note = vault.open_field(
                            uow.session, subject, "followups", "note", followup.id, followup.note_ct
                        )
                        text = f"{note}\n\nOutcome: {followup.outcome}" if note else f"Outcome: {followup.outcome}"
                        followup.note_ct = vault.seal(uow.session, subject, "followups", "note", followup.id, text)
                except SubjectErased:
                    pass
                except CryptoError as exc:
                    # A damaged key or note: sealing would lose the old note, so this row waits for a repair.
                    log.warning("follow-up %s: outcome not converted (%s)", followup.id, type(exc).__name__)
                    report.warnings.append(
                        f"follow-up {followup.id} keeps its free-text outcome: its note or "
                        "data key does not open (damaged); run init again once it is repaired"
                    )
                    continue
                followup.outcome = "other"
                report.followups_sealed += 1
            uow.commit()
    _scrub_followup_events(services, report, batch_size)


def _scrub_followup_events(services: Services, report: UpgradeReport, batch_size: int) -> None:
    """Outbox rows (kept a while after publishing) carried the same text in `followup.recorded` bodies."""
    after = 0
    while True:
        with services.uow() as uow:
            rows = uow.session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.type == FollowUpRecorded.routing_key, OutboxMessage.id > after)
                .order_by(OutboxMessage.id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            after = rows[-1].id
            for row in rows:
                if row.body.get("outcome") not in FOLLOWUP_OUTCOMES:
                    row.body = {**row.body, "outcome": "other"}
                    report.followup_events_scrubbed += 1
            uow.commit()


def drop_plaintext_idempotency_keys(services: Services, report: UpgradeReport, batch_size: int = BATCH_SIZE) -> None:
    """Idempotency keys are stored as keyed digests now; rows of earlier versions hold the client's key
    in plaintext. They only ever served retries of a recent request, so they are deleted, not converted
    (a retry of such a request after the upgrade is a new referral)."""
    after: tuple[str, str] = ("", "")
    while True:
        with services.uow() as uow:
            rows = uow.session.execute(
                select(IdempotencyKey.user_id, IdempotencyKey.key)
                .where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key) > tuple_(*after))
                .order_by(IdempotencyKey.user_id, IdempotencyKey.key)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            after = (rows[-1][0], rows[-1][1])
            plaintext = [(user_id, key) for user_id, key in rows if not _DIGEST.fullmatch(key)]
            if plaintext:
                uow.session.execute(
                    delete(IdempotencyKey).where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(plaintext))
                )
                report.idempotency_keys_dropped += len(plaintext)
            uow.commit()
