"""The vault: the single place personal data is sealed, opened and erased.

Why explicit calls here instead of a SQLAlchemy TypeDecorator: the associated data binds each
ciphertext to its row id and owning subject, and the key is the subject's own, unwrapped from
another table; a column type sees only its value. Keeping it explicit also gives every read of
personal data one chokepoint (`reveal_*`) that reports to the `AccessRecorder`, and keeps
plaintext out of ORM objects: models only ever hold ciphertext, and unwrapped data keys live in
the session's `info` for one unit of work.

After start-up has proved the keyring (`services.keys.verify_keys`), a data key or field that does
not open is one damaged record (`DamagedRecord`): the read shows a marker, the `DamageReporter`
logs it and counts it, and the rest of the service carries on.

Duplicate matching (blind indexes) lives in `services.matching`, key rotation and blind-index
re-keying in `services.keys`; both open fields through `open_field` here, never on their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from referral_service.crypto import (
    DamagedRecord,
    DataKey,
    DecryptionError,
    FieldCipher,
    FieldContext,
    KeyProvider,
    SubjectErased,
)
from referral_service.db.models import BlindIndex, Subject, SubjectKey, new_id
from referral_service.db.persist import insert_now
from referral_service.domain.errors import PersonErased, RecordDamaged
from referral_service.domain.model import PERSONAL_SUBJECT_FIELDS, SEXES, Actor, SubjectInput, age_band
from referral_service.services.access import AccessRecorder
from referral_service.services.damage import Damage, DamageLog, DamageReporter

_DEK_CACHE = "referral_service.deks"
_BROKEN_KEYS = "referral_service.broken_keys"
_DAMAGE_SEEN = "referral_service.damage_seen"
_PRELOADED = "referral_service.preloaded"  # rows a page loaded at once, held for session.get


class FieldRead(NamedTuple):
    """One sealed field as a reader gets it: the value, or why there is none."""

    value: str | None
    erased: bool = False
    damaged: bool = False


def is_minor(date_of_birth: date | None, today: date) -> bool | None:
    if date_of_birth is None:
        return None
    years = today.year - date_of_birth.year - ((today.month, today.day) < (date_of_birth.month, date_of_birth.day))
    return years < 18


class Vault:
    def __init__(
        self, keys: KeyProvider, cipher: FieldCipher, access: AccessRecorder, damage: DamageReporter | None = None
    ) -> None:
        self.keys = keys
        self.cipher = cipher
        self.access = access
        self.damage: DamageReporter = damage or DamageLog()

    # -- data keys ---------------------------------------------------------------------------
    def _new_key(self, session: Session, subject_id: str, now: datetime) -> tuple[DataKey, SubjectKey]:
        """A new data key for the subject, cached for the unit of work, and its wrapped row (not yet written)."""
        key, material = DataKey.generate()
        kek_id, wrapped = self.keys.wrap_dek(material, subject_id=subject_id, key_id=key.key_id)
        session.info.setdefault(_DEK_CACHE, {})[subject_id] = key
        row = SubjectKey(id=str(key.key_id), subject_id=subject_id, kek_id=kek_id, wrapped=wrapped, created_at=now)
        return key, row

    def load_subjects(self, session: Session, subject_ids: Sequence[str]) -> dict[str, Subject]:
        """A page's subjects and their wrapped data keys in two queries, instead of two per row: held by the
        session (its identity map only keeps weak references), `session.get` of each (and `data_key`) finds
        them without asking the database."""
        wanted = list(dict.fromkeys(subject_ids))
        if not wanted:
            return {}
        subjects = {s.id: s for s in session.scalars(select(Subject).where(Subject.id.in_(wanted)))}
        key_ids = list({s.key_id for s in subjects.values() if s.key_id})
        held: list[Any] = session.info.setdefault(_PRELOADED, [])
        held.extend(subjects.values())
        if key_ids:
            held.extend(session.scalars(select(SubjectKey).where(SubjectKey.id.in_(key_ids))))
        return subjects

    def data_key(self, session: Session, subject: Subject) -> DataKey:
        """The subject's unwrapped key; raises SubjectErased, or DamagedRecord (reported once) if it does not open."""
        return self._key(session, subject, report=True)

    def _key(self, session: Session, subject: Subject, *, report: bool) -> DataKey:
        cache: dict[str, DataKey] = session.info.setdefault(_DEK_CACHE, {})
        key = cache.get(subject.id)
        if key is not None:
            return key
        # A key that failed once fails for the rest of the unit of work without another try (or report).
        broken: dict[str, DamagedRecord] = session.info.setdefault(_BROKEN_KEYS, {})
        if subject.id in broken:
            raise broken[subject.id]
        try:
            key = self._unwrap(session, subject)
        except DamagedRecord as exc:
            broken[subject.id] = exc
            raise (self._report(session, exc) if report else exc) from None
        cache[subject.id] = key
        return key

    def _unwrap(self, session: Session, subject: Subject) -> DataKey:
        row = session.get(SubjectKey, subject.key_id)
        if row is None:
            if subject.erased_at is not None:
                raise SubjectErased("the subject's data key has been destroyed")
            raise DamagedRecord(
                table="subjects", column="key_id", row_id=subject.id, subject_id=subject.id, reason="names no data key"
            )
        if row.wrapped is None:
            raise SubjectErased("the subject's data key has been destroyed")
        if row.subject_id != subject.id:
            raise DamagedRecord(
                table="subjects",
                column="key_id",
                row_id=subject.id,
                subject_id=subject.id,
                reason="names a data key of another subject",
            )
        material = self.key_material(row)
        if isinstance(material, Damage):
            raise DamagedRecord(
                table=material.table,
                column=material.column,
                row_id=material.row_id,
                subject_id=material.subject_id,
                reason=material.reason,
            )
        return DataKey(uuid.UUID(row.id), material)

    def key_material(self, row: SubjectKey) -> bytes | Damage:
        """A stored (not destroyed) data key, unwrapped, or why it does not open (for re-wrapping).

        Only a key that fails authentication or is malformed is damage; an unknown KEK stays a
        KeyringError (start-up proved every KEK in use is present, so that is the operator's to fix).
        """
        if row.kek_id is None or row.wrapped is None:
            return Damage("subject_keys", "kek_id", row.id, row.subject_id, "names no key-encryption key")
        try:
            return self.keys.unwrap_dek(row.kek_id, row.wrapped, subject_id=row.subject_id, key_id=uuid.UUID(row.id))
        except (DecryptionError, ValueError):
            return Damage("subject_keys", "wrapped", row.id, row.subject_id, "the wrapped data key does not open")

    def _report(self, session: Session, exc: DamagedRecord) -> DamagedRecord:
        """Tell the DamageReporter, once per record per unit of work (a page may read a field twice)."""
        seen: dict[tuple[str, str, str], Damage] = session.info.setdefault(_DAMAGE_SEEN, {})
        where = (exc.table, exc.column, exc.row_id)
        if where not in seen:
            seen[where] = damage = Damage(exc.table, exc.column, exc.row_id, exc.subject_id, exc.reason)
            self.damage.report(damage)
        return exc

    def damage_seen(self, session: Session) -> list[Damage]:
        """The damaged records this unit of work met (for commands that report them at the end)."""
        return list(session.info.get(_DAMAGE_SEEN, {}).values())

    # -- sealing and opening -----------------------------------------------------------------
    def seal(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str, value: str | None
    ) -> bytes | None:
        if value is None:
            return None
        try:
            key = self.data_key(session, subject)
        except DamagedRecord:
            raise RecordDamaged(
                "this person's record is damaged (its data key does not open), so nothing new can be stored "
                "for them; an administrator can list damaged records with 'referral-service records check'"
            ) from None
        except SubjectErased:
            raise PersonErased(
                "this person's data was erased on request, so no new note about them can be stored; "
                "record the outcome without a note"
            ) from None
        return self.cipher.encrypt(key, value, FieldContext(table, column, row_id, subject.id))

    def open_field(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str, ciphertext: bytes | None
    ) -> str | None:
        """A field in the clear for the service's own use, NOT recorded: confirming a duplicate,
        re-indexing, rewriting a sealed field. Nothing opened here may reach a person; reads for
        people are `reveal_*`. Raises SubjectErased, or DamagedRecord (reported) when the key or
        this field does not open."""
        if ciphertext is None:
            return None
        key = self.data_key(session, subject)
        try:
            return self.cipher.decrypt(key, ciphertext, FieldContext(table, column, row_id, subject.id))
        except DecryptionError as exc:
            raise self._report(
                session,
                DamagedRecord(table=table, column=column, row_id=row_id, subject_id=subject.id, reason=str(exc)),
            ) from None

    def field_damage(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str, ciphertext: bytes
    ) -> Damage | None:
        """For `records check`: does this field open? The plaintext is dropped at once; nothing is
        recorded or reported. Raises SubjectErased/DamagedRecord when the subject's key does not open."""
        key = self._key(session, subject, report=False)
        try:
            self.cipher.decrypt(key, ciphertext, FieldContext(table, column, row_id, subject.id))
        except DecryptionError as exc:
            return Damage(table, column, row_id, subject.id, str(exc))
        return None

    def key_damage(self, row: SubjectKey) -> Damage | None:
        """For `records check` and `keys retire`: why this data key does not open (None: it opens, or was destroyed)."""
        if row.wrapped is None:
            return None
        material = self.key_material(row)
        return material if isinstance(material, Damage) else None

    def create_subject(self, session: Session, data: SubjectInput, now: datetime) -> Subject:
        """A new subject with its own data key and sealed fields (its blind indexes are the matcher's:
        `DuplicateMatcher.index_subject`)."""
        subject = Subject(
            province=data.province,
            district=data.district,
            preferred_language=data.preferred_language,
            is_minor=is_minor(data.date_of_birth, now.date()),
            # Coarse categories for aggregate statistics, from the input: nothing sealed is opened to count.
            stat_age_band=age_band(data.date_of_birth, now.date()),
            stat_sex=data.sex if data.sex in SEXES else None,
            created_at=now,
        )
        subject.id = new_id()
        key, key_row = self._new_key(session, subject.id, now)
        subject.key_id = str(key.key_id)
        self._write_fields(session, subject, data.personal())
        # Written at once, subject first (its key row refers to it): intake's hot path, see db.persist.
        insert_now(session, subject)
        insert_now(session, key_row)
        return subject

    def _write_fields(self, session: Session, subject: Subject, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            setattr(subject, f"{name}_ct", self.seal(session, subject, "subjects", name, subject.id, value))

    # -- reading (every read of personal data for a person passes here) --------------------------
    def reveal_subject(
        self,
        session: Session,
        subject: Subject,
        fields: Sequence[str],
        *,
        actor: Actor | None,
        referral_id: str | None,
        action: str = "referral.read",
    ) -> dict[str, Any]:
        """The requested personal fields in the clear, with `erased` and `damaged` flags.

        An erased subject reads all `None` with `erased`. A field that does not open reads `None`,
        with `damaged` and its name in `damaged_fields`; when the data key itself does not open,
        that is every stored field. The other fields read as usual.
        """
        wanted = [f for f in fields if f in PERSONAL_SUBJECT_FIELDS]
        self.access.record(actor=actor, action=action, referral_id=referral_id, subject_id=subject.id, fields=wanted)
        erased = {**dict.fromkeys(wanted), "erased": True, "damaged": False}
        if subject.erased_at is not None:  # also when every wanted field happened to be empty
            return erased
        values: dict[str, Any] = dict.fromkeys(wanted)
        damaged: list[str] = []
        for f in wanted:
            try:
                values[f] = self.open_field(session, subject, "subjects", f, subject.id, getattr(subject, f"{f}_ct"))
            except DamagedRecord:
                damaged.append(f)
            except SubjectErased:
                return erased
        if damaged:
            return {**values, "erased": False, "damaged": True, "damaged_fields": damaged}
        return {**values, "erased": False, "damaged": False}

    def reveal_field(
        self,
        session: Session,
        subject: Subject,
        table: str,
        column: str,
        row_id: str,
        ciphertext: bytes | None,
        *,
        actor: Actor | None,
        referral_id: str | None,
    ) -> str | None:
        """One sealed field of another table (incident, notes); None when erased or damaged
        (`reveal_field_read` tells which)."""
        return self.reveal_field_read(
            session, subject, table, column, row_id, ciphertext, actor=actor, referral_id=referral_id
        ).value

    def reveal_field_read(
        self,
        session: Session,
        subject: Subject,
        table: str,
        column: str,
        row_id: str,
        ciphertext: bytes | None,
        *,
        actor: Actor | None,
        referral_id: str | None,
    ) -> FieldRead:
        """One sealed field of another table: its value, or erased, or damaged."""
        if ciphertext is None:
            return FieldRead(None)
        self.access.record(
            actor=actor,
            action=f"{table}.{column}.read",
            referral_id=referral_id,
            subject_id=subject.id,
            fields=[column],
        )
        try:
            return FieldRead(self.open_field(session, subject, table, column, row_id, ciphertext))
        except DamagedRecord:
            return FieldRead(None, damaged=True)
        except SubjectErased:
            return FieldRead(None, erased=True)

    def damaged_subjects(self, session: Session, subjects: Sequence[Subject]) -> set[str]:
        """Ids of those subjects whose data key does not open (for lists that show no personal field)."""
        key_ids = [s.key_id for s in subjects if s.erased_at is None]
        if key_ids:  # one query into the identity map, so data_key's session.get does not ask per subject
            session.scalars(select(SubjectKey).where(SubjectKey.id.in_(key_ids))).all()
        damaged = set()
        for subject in subjects:
            if subject.erased_at is not None:
                continue
            try:
                self.data_key(session, subject)
            except DamagedRecord:
                damaged.add(subject.id)
            except SubjectErased:
                continue
        return damaged

    # -- audit details under the subject's key (`referral_service.audit.log.SubjectSealer`) ----------
    def seal_audit_details(self, session: Session, subject_id: str, entry_id: str, plaintext: str) -> bytes | None:
        subject = session.get(Subject, subject_id)
        if subject is None or subject.erased_at is not None:
            return None
        try:
            key = self.data_key(session, subject)
        except (DamagedRecord, SubjectErased):
            return None
        return self.cipher.encrypt(key, plaintext, FieldContext("audit_entries", "details", entry_id, subject_id))

    def open_audit_details(self, session: Session, subject_id: str, entry_id: str, sealed: bytes) -> str | None:
        subject = session.get(Subject, subject_id)
        if subject is None:
            raise DamagedRecord(
                table="audit_entries",
                column="details",
                row_id=entry_id,
                subject_id=subject_id,
                reason="no such subject",
            )
        try:
            return self.open_field(session, subject, "audit_entries", "details", entry_id, sealed)
        except DamagedRecord:
            raise
        except SubjectErased:
            return None

    # -- erasure -----------------------------------------------------------------------------
    def erase(self, session: Session, subject: Subject, now: datetime) -> None:
        """Crypto-shredding: the wrapped data key is destroyed; every ciphertext becomes noise, and the
        subject's blind-index rows (keyed digests of their CNIC and phone) are deleted with it.

        A backup taken before the erasure still holds the wrapped key, openable while its KEK lives:
        `keys rotate` then `keys retire OLD` after an erasure puts backups out of reach as well.
        """
        for row in session.scalars(select(SubjectKey).where(SubjectKey.subject_id == subject.id)):
            row.wrapped = None
            row.kek_id = None
            row.destroyed_at = now
        session.execute(delete(BlindIndex).where(BlindIndex.subject_id == subject.id))
        # The statistics' copies of sex and age band go with the fields: counted as unknown from now on.
        subject.stat_age_band = subject.stat_sex = None
        subject.erased_at = now
        session.info.get(_DEK_CACHE, {}).pop(subject.id, None)
