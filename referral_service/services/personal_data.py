"""The single place personal data is sealed, opened, matched and erased.

Why explicit calls here instead of a SQLAlchemy TypeDecorator: the associated data binds each
ciphertext to its row id and owning subject, and the key is the subject's own, unwrapped from
another table; a column type sees only its value. Keeping it explicit also gives every read of
personal data one chokepoint (`reveal_*`) that reports to the `AccessRecorder`, and keeps
plaintext out of ORM objects: models only ever hold ciphertext, and unwrapped data keys live in
the session's `info` for one unit of work.

Blind-index key rotation (`referral-service keys reindex`) runs without downtime. The versions in
use live in `crypto_meta`: `blind_index_version` (the active one; absent means 1) and, while a
re-index runs, `blind_index_next` plus `blind_index_cursor` (the last subject id done). While
`blind_index_next` exists every write adds rows for both versions and every lookup asks both, so
a request never misses a match whichever rows exist yet. The re-index fills the next version in
subject-id order (batches, each committed with the cursor, so it resumes after a crash), catches
up on subjects written by processes that had not noticed the transition, switches the active
version, catches up once more, and deletes the old rows.

Start-up proves the keyring against canaries of its own, never against subjects' keys: per KEK, a
random key wrapped by it under a fixed canary context, kept in `crypto_meta` (`kek_canary:<id>`)
and written when the KEK is first seen (init, `keys rotate`, or the first start of a database
from before canaries). After that, a data key or field that does not open is one damaged record
(`DamagedRecord`): the read shows a marker, the `DamageReporter` logs it and counts it, and the
rest of the service carries on.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from hashlib import sha256
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from sqlalchemy import and_, delete, exists, func, insert, or_, select
from sqlalchemy.orm import Session, aliased

from referral_service.crypto import (
    BlindIndexer,
    CryptoError,
    DamagedRecord,
    DataKey,
    DecryptionError,
    FieldCipher,
    FieldContext,
    KeyProvider,
    KeyringError,
    SubjectErased,
    normalise_cnic,
    normalise_phone,
)
from referral_service.db.models import BlindIndex, CryptoMeta, Subject, SubjectKey, new_id
from referral_service.domain.errors import RecordDamaged
from referral_service.domain.model import PERSONAL_SUBJECT_FIELDS, Actor, SubjectInput
from referral_service.services.access import AccessRecorder
from referral_service.services.damage import Damage, DamageLog, DamageReporter

log = logging.getLogger(__name__)

_DEK_CACHE = "referral_service.deks"
_BROKEN_KEYS = "referral_service.broken_keys"
_DAMAGE_SEEN = "referral_service.damage_seen"
_INDEX_VERSIONS = "referral_service.blind_index_versions"
_INDEX_VALUES = "referral_service.blind_index_values"
ACTIVE_INDEX = "blind_index_version"
NEXT_INDEX = "blind_index_next"
INDEX_CURSOR = "blind_index_cursor"
_NORMALISERS = {"cnic": normalise_cnic, "phone": normalise_phone}
CANARY_PREFIX = "kek_canary:"
# The canary's wrap context: no subject id can be this (they are UUIDs), so a canary is never
# mistaken for a data key, nor a data key for a canary.
_CANARY_SUBJECT = "referral-service/kek-canary"
_CANARY_KEYS = uuid.UUID("5b1c7f0e-3d1a-4c55-9a57-2f3c6e8d9b10")  # uuid5 namespace of canary key ids
# A KEK without a canary that already wraps stored keys (a database from before canaries) is proved
# by the first of these many keys that opens, so one damaged row cannot fail it.
_LEGACY_SAMPLE = 50
_META_VALUE_MAX = 200  # crypto_meta.value


def canary_name(kek_id: str) -> str:
    name = CANARY_PREFIX + kek_id
    # crypto_meta.name holds 64 characters; a KMS key ARN is longer.
    return name if len(name) <= 64 else CANARY_PREFIX + "sha256:" + sha256(kek_id.encode()).hexdigest()[:40]


def _canary_key_id(kek_id: str) -> uuid.UUID:
    return uuid.uuid5(_CANARY_KEYS, kek_id)


class FieldRead(NamedTuple):
    """One sealed field as a reader gets it: the value, or why there is none."""

    value: str | None
    erased: bool = False
    damaged: bool = False


class RewrapBatch(NamedTuple):
    seen: int  # rows looked at (0: the pass is over)
    rewrapped: int
    last_id: str | None  # where the next batch of this pass starts
    damaged: list[Damage]


@dataclass
class SubjectMatch:
    """An earlier subject whose CNIC and/or phone equals the new one's (`matched_on`: "cnic", "phone")."""

    subject: Subject
    matched_on: list[str]


def is_minor(date_of_birth: date | None, today: date) -> bool | None:
    if date_of_birth is None:
        return None
    years = today.year - date_of_birth.year - ((today.month, today.day) < (date_of_birth.month, date_of_birth.day))
    return years < 18


def _insert_if_absent(session: Session, name: str, value: str) -> Any:
    """Two processes starting at once may both write a canary: the first one stays (either opens)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(CryptoMeta).values(name=name, value=value).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(CryptoMeta).values(name=name, value=value).on_conflict_do_nothing()
    return insert(CryptoMeta).values(name=name, value=value)


class PersonalData:
    def __init__(
        self, keys: KeyProvider, cipher: FieldCipher, indexer: BlindIndexer, access: AccessRecorder,
        damage: DamageReporter | None = None,
    ) -> None:
        self.keys = keys
        self.cipher = cipher
        self.indexer = indexer
        self.access = access
        self.damage: DamageReporter = damage or DamageLog()
        self._indexers: dict[int, BlindIndexer] = {indexer.version: indexer}

    # -- data keys ---------------------------------------------------------------------------
    def _new_key(self, session: Session, subject_id: str, now: datetime) -> DataKey:
        key, material = DataKey.generate()
        kek_id, wrapped = self.keys.wrap_dek(material, subject_id=subject_id, key_id=key.key_id)
        session.add(SubjectKey(id=str(key.key_id), subject_id=subject_id, kek_id=kek_id, wrapped=wrapped,
                               created_at=now))
        session.info.setdefault(_DEK_CACHE, {})[subject_id] = key
        return key

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
            raise DamagedRecord(table="subjects", column="key_id", row_id=subject.id, subject_id=subject.id,
                                reason="names no data key")
        if row.wrapped is None:
            raise SubjectErased("the subject's data key has been destroyed")
        if row.subject_id != subject.id:
            raise DamagedRecord(table="subjects", column="key_id", row_id=subject.id, subject_id=subject.id,
                                reason="names a data key of another subject")
        material = self._stored_key_material(row)
        if isinstance(material, Damage):
            raise DamagedRecord(table=material.table, column=material.column, row_id=material.row_id,
                                subject_id=material.subject_id, reason=material.reason)
        return DataKey(uuid.UUID(row.id), material)

    def _stored_key_material(self, row: SubjectKey) -> bytes | Damage:
        """A stored (not destroyed) data key, unwrapped, or why it does not open.

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
    def seal(self, session: Session, subject: Subject, table: str, column: str, row_id: str,
             value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            key = self.data_key(session, subject)
        except DamagedRecord:
            raise RecordDamaged(
                "this person's record is damaged (its data key does not open), so nothing new can be stored "
                "for them; an administrator can list damaged records with 'referral-service records check'"
            ) from None
        return self.cipher.encrypt(key, value, FieldContext(table, column, row_id, subject.id))

    def _open(self, session: Session, subject: Subject, table: str, column: str, row_id: str,
              ciphertext: bytes | None) -> str | None:
        """Raises SubjectErased, or DamagedRecord (reported) when the key or this field does not open."""
        if ciphertext is None:
            return None
        key = self.data_key(session, subject)
        try:
            return self.cipher.decrypt(key, ciphertext, FieldContext(table, column, row_id, subject.id))
        except DecryptionError as exc:
            raise self._report(session, DamagedRecord(table=table, column=column, row_id=row_id,
                                                      subject_id=subject.id, reason=str(exc))) from None

    def field_damage(self, session: Session, subject: Subject, table: str, column: str, row_id: str,
                     ciphertext: bytes) -> Damage | None:
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
        material = self._stored_key_material(row)
        return material if isinstance(material, Damage) else None

    def create_subject(self, session: Session, data: SubjectInput, now: datetime) -> Subject:
        subject = Subject(
            province=data.province,
            district=data.district,
            preferred_language=data.preferred_language,
            is_minor=is_minor(data.date_of_birth, now.date()),
            created_at=now,
        )
        subject.id = new_id()
        key = self._new_key(session, subject.id, now)
        subject.key_id = str(key.key_id)
        self._write_fields(session, subject, data.personal())
        session.add(subject)
        session.flush()
        self._write_indexes(session, subject, data.cnic, data.phone)
        return subject

    def _write_fields(self, session: Session, subject: Subject, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            setattr(subject, f"{name}_ct", self.seal(session, subject, "subjects", name, subject.id, value))

    def _write_indexes(self, session: Session, subject: Subject, cnic: str | None, phone: str | None) -> None:
        for column, value in (("cnic", cnic), ("phone", phone)):
            if value:
                for version in self.index_versions(session):
                    session.add(BlindIndex(subject_id=subject.id, column=column, version=version,
                                           value=self._index_value(session, version, column, value)))

    def _index_value(self, session: Session, version: int, column: str, value: str) -> int:
        # Intake looks a value up and then indexes it: hash once per unit of work. The cache lives
        # and dies with the session, like the data-key cache, so no plaintext outlives the request.
        cache: dict[tuple[int, str, str], int] = session.info.setdefault(_INDEX_VALUES, {})
        key = (version, column, value)
        found = cache.get(key)
        if found is None:
            found = cache[key] = self.indexer_for(version).index(column, value)
        return found

    # -- blind-index versions ------------------------------------------------------------------
    def indexer_for(self, version: int) -> BlindIndexer:
        indexer = self._indexers.get(version)
        if indexer is None:
            indexer = self._indexers[version] = BlindIndexer(self.keys, version)
        return indexer

    def index_versions(self, session: Session) -> tuple[int, ...]:
        """The active blind-index version, then the next one while a re-index runs (once per unit of work)."""
        cached: tuple[int, ...] | None = session.info.get(_INDEX_VERSIONS)
        if cached is None:
            meta = dict(session.execute(
                select(CryptoMeta.name, CryptoMeta.value).where(CryptoMeta.name.in_((ACTIVE_INDEX, NEXT_INDEX)))
            ).all())
            active = int(meta.get(ACTIVE_INDEX, self.indexer.version))
            cached = (active, int(meta[NEXT_INDEX])) if NEXT_INDEX in meta else (active,)
            session.info[_INDEX_VERSIONS] = cached
        return cached

    # -- reading (every read of personal data passes here) -------------------------------------
    def reveal_subject(
        self, session: Session, subject: Subject, fields: Sequence[str], *, actor: Actor | None,
        referral_id: str | None, action: str = "referral.read",
    ) -> dict[str, Any]:
        """The requested personal fields in the clear, with `erased` and `damaged` flags.

        An erased subject reads all `None` with `erased`. A field that does not open reads `None`,
        with `damaged` and its name in `damaged_fields`; when the data key itself does not open,
        that is every stored field. The other fields read as usual.
        """
        wanted = [f for f in fields if f in PERSONAL_SUBJECT_FIELDS]
        self.access.record(actor=actor, action=action, referral_id=referral_id, subject_id=subject.id,
                           fields=wanted)
        erased = {**dict.fromkeys(wanted), "erased": True, "damaged": False}
        if subject.erased_at is not None:  # also when every wanted field happened to be empty
            return erased
        values: dict[str, Any] = dict.fromkeys(wanted)
        damaged: list[str] = []
        for f in wanted:
            try:
                values[f] = self._open(session, subject, "subjects", f, subject.id, getattr(subject, f"{f}_ct"))
            except DamagedRecord:
                damaged.append(f)
            except SubjectErased:
                return erased
        if damaged:
            return {**values, "erased": False, "damaged": True, "damaged_fields": damaged}
        return {**values, "erased": False, "damaged": False}

    def reveal_field(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str,
        ciphertext: bytes | None, *, actor: Actor | None, referral_id: str | None,
    ) -> str | None:
        """One sealed field of another table (incident, notes); None when erased or damaged
        (`reveal_field_read` tells which)."""
        return self.reveal_field_read(session, subject, table, column, row_id, ciphertext, actor=actor,
                                      referral_id=referral_id).value

    def reveal_field_read(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str,
        ciphertext: bytes | None, *, actor: Actor | None, referral_id: str | None,
    ) -> FieldRead:
        """One sealed field of another table: its value, or erased, or damaged."""
        if ciphertext is None:
            return FieldRead(None)
        self.access.record(actor=actor, action=f"{table}.{column}.read", referral_id=referral_id,
                           subject_id=subject.id, fields=[column])
        try:
            return FieldRead(self._open(session, subject, table, column, row_id, ciphertext))
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

    # -- duplicates --------------------------------------------------------------------------
    def find_matching_subjects(self, session: Session, cnic: str | None, phone: str | None) -> list[SubjectMatch]:
        """Every earlier, non-erased subject whose CNIC or phone matches exactly, confirmed after decryption,
        oldest first, each with the columns that matched.

        A candidate that does not open (a damaged ciphertext or data key) is skipped with a log line
        naming its id: one bad row must not stop an unrelated intake that shares its blind-index value.
        """
        versions = self.index_versions(session)
        found: dict[str, SubjectMatch] = {}
        damaged: set[str] = set()
        for column, value in (("cnic", cnic), ("phone", phone)):
            if not value:
                continue
            wanted = _NORMALISERS[column](value)
            matches = or_(*(and_(BlindIndex.version == v,
                                 BlindIndex.value == self._index_value(session, v, column, value))
                            for v in versions))
            # IN (subquery) so the database starts from the index lookup, not from every subject.
            candidates = session.scalars(
                select(Subject)
                .where(Subject.erased_at.is_(None),
                       Subject.id.in_(select(BlindIndex.subject_id).where(BlindIndex.column == column, matches)))
                .order_by(Subject.created_at, Subject.id)
            ).all()
            for candidate in candidates:
                if candidate.id in damaged:
                    continue
                try:
                    stored = self._open(session, candidate, "subjects", column, candidate.id,
                                        getattr(candidate, f"{column}_ct"))
                    same = bool(stored) and _NORMALISERS[column](stored or "") == wanted
                except (DamagedRecord, CryptoError, InvalidTag, ValueError) as exc:
                    if isinstance(exc, SubjectErased) and not isinstance(exc, DamagedRecord):
                        continue  # erased since the query ran: not a match, not damage
                    # ValueError: a plaintext that is not UTF-8 or no longer normalises is damage too.
                    damaged.add(candidate.id)
                    log.warning("duplicate check skipped subject %s: its %s does not open (%s)",
                                candidate.id, column, type(exc).__name__)
                    continue
                if same:
                    match = found.setdefault(candidate.id, SubjectMatch(candidate, []))
                    match.matched_on.append(column)
        return sorted(found.values(), key=lambda m: (m.subject.created_at, m.subject.id))

    # -- erasure and rotation ------------------------------------------------------------------
    def erase(self, session: Session, subject: Subject, now: datetime) -> None:
        """Crypto-shredding: the wrapped data key is destroyed; every ciphertext becomes noise.

        A backup taken before the erasure still holds the wrapped key, openable while its KEK lives:
        `keys rotate` then `keys retire OLD` after an erasure puts backups out of reach as well.
        """
        for row in session.scalars(select(SubjectKey).where(SubjectKey.subject_id == subject.id)):
            row.wrapped = None
            row.kek_id = None
            row.destroyed_at = now
        session.execute(delete(BlindIndex).where(BlindIndex.subject_id == subject.id))
        subject.erased_at = now
        session.info.get(_DEK_CACHE, {}).pop(subject.id, None)

    def rewrap_batch(self, session: Session, batch_size: int = 500, *, after: str = "") -> RewrapBatch:
        """Re-wrap up to `batch_size` data keys (ids after `after`) under the active KEK.

        A key that does not open is damaged: it is left as it is, under its old KEK, and returned in
        `damaged`; the pass goes on past it (`after`), so a rotation never stops or loops on one row.
        """
        active = self.keys.active_kek_id()
        query = (
            select(SubjectKey)
            .where(SubjectKey.wrapped.is_not(None), SubjectKey.kek_id != active, SubjectKey.id > after)
            .order_by(SubjectKey.id)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        rewrapped, damaged = 0, []
        for row in rows:
            if row.wrapped is None or row.kek_id is None:  # erased since the query ran
                continue
            material = self._stored_key_material(row)
            if isinstance(material, Damage):
                damaged.append(material)
                continue
            row.kek_id, row.wrapped = self.keys.wrap_dek(material, subject_id=row.subject_id,
                                                         key_id=uuid.UUID(row.id))
            rewrapped += 1
        return RewrapBatch(len(rows), rewrapped, rows[-1].id if rows else None, damaged)

    def damaged_keys(self, session: Session, kek_id: str, batch_size: int = 500) -> list[Damage]:
        """The data keys wrapped by `kek_id` that do not open (what stops `keys retire`)."""
        damaged: list[Damage] = []
        after = ""
        while True:
            rows = session.scalars(
                select(SubjectKey).where(SubjectKey.kek_id == kek_id, SubjectKey.wrapped.is_not(None),
                                         SubjectKey.id > after).order_by(SubjectKey.id).limit(batch_size)
            ).all()
            if not rows:
                return damaged
            damaged.extend(d for d in map(self.key_damage, rows) if d is not None)
            after = rows[-1].id

    def keys_to_rewrap(self, session: Session) -> int:
        active = self.keys.active_kek_id()
        return session.scalar(
            select(func.count()).select_from(SubjectKey)
            .where(SubjectKey.wrapped.is_not(None), SubjectKey.kek_id != active)
        ) or 0

    def kek_usage(self, session: Session) -> dict[str, int]:
        rows = session.execute(
            select(SubjectKey.kek_id, func.count()).where(SubjectKey.wrapped.is_not(None)).group_by(SubjectKey.kek_id)
        ).all()
        return {str(kek): int(n) for kek, n in rows}

    def verify_keys(self, session: Session) -> None:
        """Start-up check: this keyring is the one the database was created with, every KEK that wraps
        stored data keys is in it and opens its canary; then the active KEK gets a canary if it has none.

        Raises KeyringError (one line) instead of letting a wrong keyring yield garbage later. No
        subject's key decides it: one damaged row must not stop the service.
        """
        fingerprint = hmac.new(self.keys.derive_secret("fingerprint"), b"referral-service", sha256).hexdigest()
        meta = session.get(CryptoMeta, "keyring_fingerprint")
        if meta is None:
            session.add(CryptoMeta(name="keyring_fingerprint", value=fingerprint))
        elif not hmac.compare_digest(meta.value, fingerprint):
            raise KeyringError("REFERRAL_KEYRING: this keyring is not the one this database was created with")
        known = set(self.keys.kek_ids())
        in_use = self.kek_usage(session)
        for kek_id in sorted(in_use):
            if kek_id not in known:
                raise KeyringError(f"REFERRAL_KEYRING: key {kek_id}, which wraps stored data keys, is missing")
        canaries = dict(session.execute(
            select(CryptoMeta.name, CryptoMeta.value).where(CryptoMeta.name.startswith(CANARY_PREFIX))
        ).all())
        for kek_id in sorted(in_use):
            stored = canaries.get(canary_name(kek_id))
            if stored is not None and self._canary_opens(kek_id, stored):
                continue
            # No canary yet (a database from before canaries), or one that does not open: the KEK's
            # own data keys decide. If one opens, the KEK is right and a failed canary was the damage.
            if not self._opens_a_data_key(session, kek_id):
                raise KeyringError(
                    f"REFERRAL_KEYRING: key-encryption key {kek_id} does not open its data keys (wrong keyring?)")
            if stored is not None:
                log.warning("damaged record: table=crypto_meta column=value row=%s reason=the canary does not "
                            "open, but the key-encryption key opens its data keys", canary_name(kek_id))
                if kek_id == self.keys.active_kek_id():
                    session.execute(delete(CryptoMeta).where(CryptoMeta.name == canary_name(kek_id)))
        self.write_canary(session)

    def write_canary(self, session: Session) -> str | None:
        """Give the active KEK its canary, if it has none: a random key wrapped by it (through the
        keyring's own wrap call) under a fixed canary context. Returns the KEK id when one was written."""
        kek_id = self.keys.active_kek_id()
        name = canary_name(kek_id)
        if session.get(CryptoMeta, name) is not None:
            return None
        wrapped_by, wrapped = self.keys.wrap_dek(os.urandom(32), subject_id=_CANARY_SUBJECT,
                                                 key_id=_canary_key_id(kek_id))
        if wrapped_by != kek_id:  # rotated between the two calls: that KEK gets its canary at the next start
            return None
        value = base64.b64encode(wrapped).decode()
        if len(value) > _META_VALUE_MAX:
            raise KeyringError(f"REFERRAL_KEYRING: a wrapped key of {kek_id} is too long for its canary "
                               f"({len(wrapped)} bytes; at most {_META_VALUE_MAX * 3 // 4})")
        session.execute(_insert_if_absent(session, name, value))
        return kek_id

    def forget_canary(self, session: Session, kek_id: str) -> None:
        """After `keys retire`: the canary of a KEK that is gone proves nothing."""
        session.execute(delete(CryptoMeta).where(CryptoMeta.name == canary_name(kek_id)))

    def _canary_opens(self, kek_id: str, stored: str) -> bool:
        try:
            wrapped = base64.b64decode(stored, validate=True)
            self.keys.unwrap_dek(kek_id, wrapped, subject_id=_CANARY_SUBJECT, key_id=_canary_key_id(kek_id))
        except (DecryptionError, binascii.Error, ValueError):
            return False
        return True

    def _opens_a_data_key(self, session: Session, kek_id: str) -> bool:
        rows = session.scalars(
            select(SubjectKey).where(SubjectKey.kek_id == kek_id, SubjectKey.wrapped.is_not(None))
            .order_by(SubjectKey.id).limit(_LEGACY_SAMPLE)
        ).all()
        return any(not isinstance(self._stored_key_material(row), Damage) for row in rows)

    # -- blind-index re-keying (`keys reindex`) --------------------------------------------------
    def _set_meta(self, session: Session, name: str, value: str | None) -> None:
        row = session.get(CryptoMeta, name)
        if value is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(CryptoMeta(name=name, value=value))
        else:
            row.value = value
        session.info.pop(_INDEX_VERSIONS, None)

    def begin_reindex(self, session: Session) -> tuple[int, int]:
        """Start writing and reading version N+1 beside N; resumes a re-index already under way."""
        versions = self.index_versions(session)
        if len(versions) == 2:
            return versions[0], versions[1]
        active = versions[0]
        self._set_meta(session, ACTIVE_INDEX, str(active))
        self._set_meta(session, NEXT_INDEX, str(active + 1))
        self._set_meta(session, INDEX_CURSOR, "")
        return active, active + 1

    def reindex_remaining(self, session: Session) -> int:
        cursor = session.get(CryptoMeta, INDEX_CURSOR)
        return session.scalar(
            select(func.count()).select_from(Subject)
            .where(Subject.erased_at.is_(None), Subject.id > (cursor.value if cursor else ""))
        ) or 0

    def reindex_batch(self, session: Session, batch_size: int = 500) -> int:
        """Write next-version index rows for the next `batch_size` subjects; returns how many were visited."""
        versions = self.index_versions(session)
        if len(versions) < 2:
            return 0
        cursor = session.get(CryptoMeta, INDEX_CURSOR)
        subjects = session.scalars(
            select(Subject).where(Subject.erased_at.is_(None), Subject.id > (cursor.value if cursor else ""))
            .order_by(Subject.id).limit(batch_size)
        ).all()
        if not subjects:
            return 0
        self._fill_next(session, versions[1], subjects)
        self._set_meta(session, INDEX_CURSOR, subjects[-1].id)
        return len(subjects)

    def _fill_next(self, session: Session, version: int, subjects: Sequence[Subject]) -> None:
        have = set(session.execute(
            select(BlindIndex.subject_id, BlindIndex.column)
            .where(BlindIndex.version == version, BlindIndex.subject_id.in_([s.id for s in subjects]))
        ).all())
        indexer = self.indexer_for(version)
        for subject in subjects:
            for column in ("cnic", "phone"):
                ciphertext = getattr(subject, f"{column}_ct")
                if ciphertext is None or (subject.id, column) in have:
                    continue
                try:
                    value = self._open(session, subject, "subjects", column, subject.id, ciphertext)
                except SubjectErased:  # a DamagedRecord too: skipped, reported, listed by `damage_seen`
                    continue
                if value:
                    session.add(BlindIndex(subject_id=subject.id, column=column, version=version,
                                           value=indexer.index(column, value)))

    def _catch_up(self, session: Session, old: int, new: int) -> None:
        """Subjects indexed under `old` only: written by a process that had not yet seen the transition."""
        newer = aliased(BlindIndex)
        lagging = session.scalars(
            select(Subject).where(
                Subject.erased_at.is_(None),
                exists().where(
                    BlindIndex.subject_id == Subject.id, BlindIndex.version == old,
                    ~exists().where(newer.subject_id == BlindIndex.subject_id, newer.column == BlindIndex.column,
                                    newer.version == new),
                ),
            )
        ).all()
        if lagging:
            self._fill_next(session, new, lagging)

    def switch_index(self, session: Session) -> int:
        """After every batch: make the next version active (old rows stay until `drop_old_index`)."""
        versions = self.index_versions(session)
        if len(versions) < 2:
            return versions[0]
        old, new = versions
        self._catch_up(session, old, new)
        self._set_meta(session, ACTIVE_INDEX, str(new))
        self._set_meta(session, NEXT_INDEX, None)
        self._set_meta(session, INDEX_CURSOR, None)
        return new

    def drop_old_index(self, session: Session) -> int:
        """Once the switch has committed: a last catch-up, then delete rows of every other version."""
        active = self.index_versions(session)[0]
        for old in session.scalars(select(BlindIndex.version).where(BlindIndex.version != active).distinct()).all():
            self._catch_up(session, old, active)
        result = session.execute(delete(BlindIndex).where(BlindIndex.version != active))
        return int(getattr(result, "rowcount", 0) or 0)
