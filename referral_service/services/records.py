"""`referral-service records check`: find every damaged record, print nothing personal.

Walks every wrapped data key and every sealed column in id order, a batch per short transaction,
and tries to open each; the plaintext is dropped at once. Erased subjects are not damaged (their
key was destroyed on purpose) and are skipped. A field behind a data key that does not open cannot
be checked: the key is listed once, and its fields are counted as `unreadable_fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from referral_service.crypto import DamagedRecord, SubjectErased
from referral_service.db.models import Assignment, CaseNote, FollowUp, Referral, Subject, SubjectKey
from referral_service.services.damage import Damage

if TYPE_CHECKING:
    from referral_service.services.ports import Services

SUBJECT_COLUMNS = ("full_name", "date_of_birth", "sex", "cnic", "phone", "address")
# (table, model, sealed column attribute, column name, the model's referral id attribute)
OTHER_SEALED = (
    ("referrals", Referral, Referral.incident_ct, "incident", Referral.id),
    ("assignments", Assignment, Assignment.note_ct, "note", Assignment.referral_id),
    ("followups", FollowUp, FollowUp.note_ct, "note", FollowUp.referral_id),
    ("case_notes", CaseNote, CaseNote.note_ct, "note", CaseNote.referral_id),
)


@dataclass
class CheckSummary:
    checked_keys: int = 0
    checked_fields: int = 0
    unreadable_fields: int = 0
    damaged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "checked_keys": self.checked_keys,
            "checked_fields": self.checked_fields,
            "unreadable_fields": self.unreadable_fields,
            "damaged": self.damaged,
        }


def check_records(services: Services, on_damage: Callable[[Damage], None], *, batch_size: int = 500) -> CheckSummary:
    """Call `on_damage` for each damaged record (outside any transaction) and return the totals."""
    vault = services.vault
    summary = CheckSummary()
    # Every field is opened (in memory only): that is a read of personal data, so it is on record.
    services.access.record(actor=None, action="records.check", referral_id=None)

    def found(batch: list[Damage]) -> None:
        summary.damaged += len(batch)
        for damage in batch:
            on_damage(damage)

    after = ""
    while True:  # wrapped data keys (destroyed ones are erasures, not damage)
        with services.uow() as uow:
            keys = uow.session.scalars(
                select(SubjectKey)
                .where(SubjectKey.wrapped.is_not(None), SubjectKey.id > after)
                .order_by(SubjectKey.id)
                .limit(batch_size)
            ).all()
            batch = [d for d in map(vault.key_damage, keys) if d is not None]
            last = keys[-1].id if keys else None
        if last is None:
            break
        summary.checked_keys += len(keys)
        after = last
        found(batch)

    after = ""
    while True:  # subjects' own sealed columns
        with services.uow() as uow:
            subjects = uow.session.scalars(
                select(Subject)
                .where(Subject.erased_at.is_(None), Subject.id > after)
                .order_by(Subject.id)
                .limit(batch_size)
            ).all()
            batch = []
            for subject in subjects:
                sealed = [(c, ct) for c in SUBJECT_COLUMNS if (ct := getattr(subject, f"{c}_ct")) is not None]
                batch.extend(_check_fields(services, uow.session, subject, "subjects", subject.id, sealed, summary))
            last = subjects[-1].id if subjects else None
        if last is None:
            break
        after = last
        found(batch)

    for table, model, sealed_column, column, referral_id in OTHER_SEALED:
        after = ""
        while True:
            with services.uow() as uow:
                query = select(model.id, sealed_column, Subject).select_from(model)
                if model is not Referral:
                    query = query.join(Referral, Referral.id == referral_id)
                rows = uow.session.execute(
                    query.join(Subject, Subject.id == Referral.subject_id)
                    .where(sealed_column.is_not(None), Subject.erased_at.is_(None), model.id > after)
                    .order_by(model.id)
                    .limit(batch_size)
                ).all()
                batch = []
                for row_id, ciphertext, subject in rows:
                    if ciphertext is None:  # never: the query asks for sealed rows only (this is for mypy)
                        continue
                    batch.extend(
                        _check_fields(services, uow.session, subject, table, row_id, [(column, ciphertext)], summary)
                    )
            if not rows:
                break
            after = rows[-1][0]
            found(batch)
    return summary


def _check_fields(
    services: Services,
    session: Any,
    subject: Subject,
    table: str,
    row_id: str,
    sealed: list[tuple[str, bytes]],
    summary: CheckSummary,
) -> list[Damage]:
    vault = services.vault
    damaged: list[Damage] = []
    for column, ciphertext in sealed:
        try:
            damage = vault.field_damage(session, subject, table, column, row_id, ciphertext)
        except DamagedRecord as exc:
            summary.unreadable_fields += 1
            # A key that does not open was listed with the keys; a subject that names no (or another
            # subject's) key is listed here, once.
            if exc.table == "subjects" and table == "subjects" and column == sealed[0][0]:
                damaged.append(Damage(exc.table, exc.column, exc.row_id, exc.subject_id, exc.reason))
            continue
        except SubjectErased:
            continue
        summary.checked_fields += 1
        if damage is not None:
            damaged.append(damage)
    return damaged
