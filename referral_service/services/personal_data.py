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
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from referral_service.crypto import (
    BlindIndexer,
    CryptoError,
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
from referral_service.domain.model import PERSONAL_SUBJECT_FIELDS, Actor
from referral_service.services.access import AccessRecorder

log = logging.getLogger(__name__)

_DEK_CACHE = "referral_service.deks"
_INDEX_VERSIONS = "referral_service.blind_index_versions"
_INDEX_VALUES = "referral_service.blind_index_values"
ACTIVE_INDEX = "blind_index_version"
NEXT_INDEX = "blind_index_next"
INDEX_CURSOR = "blind_index_cursor"
_NORMALISERS = {"cnic": normalise_cnic, "phone": normalise_phone}


@dataclass(frozen=True)
class SubjectInput:
    full_name: str
    province: str
    district: str
    date_of_birth: date | None = None
    sex: str | None = None
    cnic: str | None = None
    phone: str | None = None
    address: str | None = None
    preferred_language: str | None = None

    def personal(self) -> dict[str, str | None]:
        return {
            "full_name": self.full_name,
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
            "sex": self.sex,
            "cnic": self.cnic,
            "phone": self.phone,
            "address": self.address,
        }


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


class PersonalData:
    def __init__(
        self, keys: KeyProvider, cipher: FieldCipher, indexer: BlindIndexer, access: AccessRecorder
    ) -> None:
        self.keys = keys
        self.cipher = cipher
        self.indexer = indexer
        self.access = access
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
        cache: dict[str, DataKey] = session.info.setdefault(_DEK_CACHE, {})
        key = cache.get(subject.id)
        if key is not None:
            return key
        row = session.get(SubjectKey, subject.key_id)
        if row is None or row.wrapped is None or row.kek_id is None:
            raise SubjectErased("the subject's data key has been destroyed")
        if row.subject_id != subject.id:
            raise DecryptionError("the subject names a data key of another subject")
        key_id = uuid.UUID(row.id)
        material = self.keys.unwrap_dek(row.kek_id, row.wrapped, subject_id=subject.id, key_id=key_id)
        key = DataKey(key_id, material)
        cache[subject.id] = key
        return key

    # -- sealing and opening -----------------------------------------------------------------
    def seal(self, session: Session, subject: Subject, table: str, column: str, row_id: str,
             value: str | None) -> bytes | None:
        if value is None:
            return None
        key = self.data_key(session, subject)
        return self.cipher.encrypt(key, value, FieldContext(table, column, row_id, subject.id))

    def _open(self, session: Session, subject: Subject, table: str, column: str, row_id: str,
              ciphertext: bytes | None) -> str | None:
        if ciphertext is None:
            return None
        key = self.data_key(session, subject)
        return self.cipher.decrypt(key, ciphertext, FieldContext(table, column, row_id, subject.id))

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
        """The requested personal fields in the clear, or all `None` with `erased` for a shredded subject."""
        wanted = [f for f in fields if f in PERSONAL_SUBJECT_FIELDS]
        self.access.record(actor=actor, action=action, referral_id=referral_id, subject_id=subject.id,
                           fields=wanted)
        if subject.erased_at is not None:  # also when every wanted field happened to be empty
            return {**dict.fromkeys(wanted), "erased": True}
        try:
            values = {f: self._open(session, subject, "subjects", f, subject.id, getattr(subject, f"{f}_ct"))
                      for f in wanted}
        except SubjectErased:
            return {**dict.fromkeys(wanted), "erased": True}
        return {**values, "erased": False}

    def reveal_field(
        self, session: Session, subject: Subject, table: str, column: str, row_id: str,
        ciphertext: bytes | None, *, actor: Actor | None, referral_id: str | None,
    ) -> str | None:
        """One sealed field of another table (incident, notes); None when erased."""
        if ciphertext is None:
            return None
        self.access.record(actor=actor, action=f"{table}.{column}.read", referral_id=referral_id,
                           subject_id=subject.id, fields=[column])
        try:
            return self._open(session, subject, table, column, row_id, ciphertext)
        except SubjectErased:
            return None

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
                except SubjectErased:
                    continue
                except (CryptoError, InvalidTag, ValueError) as exc:
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

    def rewrap_batch(self, session: Session, batch_size: int = 500) -> int:
        """Re-wrap up to `batch_size` data keys under the active KEK; returns how many."""
        active = self.keys.active_kek_id()
        query = (
            select(SubjectKey)
            .where(SubjectKey.wrapped.is_not(None), SubjectKey.kek_id != active)
            .order_by(SubjectKey.id)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        for row in rows:
            if row.wrapped is None or row.kek_id is None:  # erased since the query ran
                continue
            key_id = uuid.UUID(row.id)
            material = self.keys.unwrap_dek(row.kek_id, row.wrapped, subject_id=row.subject_id, key_id=key_id)
            row.kek_id, row.wrapped = self.keys.wrap_dek(material, subject_id=row.subject_id, key_id=key_id)
        return len(rows)

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
        """Start-up check: the keyring opens the stored data keys and is the one the indexes used.

        Raises KeyringError (one line) instead of letting a wrong keyring yield garbage later.
        """
        fingerprint = hmac.new(self.keys.derive_secret("fingerprint"), b"referral-service", sha256).hexdigest()
        meta = session.get(CryptoMeta, "keyring_fingerprint")
        if meta is None:
            session.add(CryptoMeta(name="keyring_fingerprint", value=fingerprint))
        elif not hmac.compare_digest(meta.value, fingerprint):
            raise KeyringError("REFERRAL_KEYRING: this keyring is not the one this database was created with")
        known = set(self.keys.kek_ids())
        for kek_id in self.kek_usage(session):
            if kek_id not in known:
                raise KeyringError(f"REFERRAL_KEYRING: key {kek_id}, which wraps stored data keys, is missing")
            row = session.scalars(
                select(SubjectKey).where(SubjectKey.kek_id == kek_id, SubjectKey.wrapped.is_not(None)).limit(1)
            ).one()
            if row.wrapped is not None:
                self.keys.unwrap_dek(kek_id, row.wrapped, subject_id=row.subject_id, key_id=uuid.UUID(row.id))

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
                except SubjectErased:
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
