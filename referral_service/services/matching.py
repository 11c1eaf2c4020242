"""The duplicate matcher: CNIC and phone found through truncated keyed blind indexes.

A blind index is a short HMAC of the normalised value (`crypto.BlindIndexer`), so a lookup finds
candidates without decrypting every subject; a truncated value is shared by many people, so every
candidate is confirmed by opening its field in the vault (`Vault.open_field`) and comparing.

The versions in use live in `crypto_meta`: `blind_index_version` (the active one; absent means 1)
and, while a re-index runs (`services.keys.reindex`), `blind_index_next` plus `blind_index_cursor`
(the last subject id done). While `blind_index_next` exists every write adds rows for both versions
and every lookup asks both, so a request never misses a match whichever rows exist yet.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from referral_service.crypto import (
    BlindIndexer,
    CryptoError,
    DamagedRecord,
    KeyProvider,
    SubjectErased,
    normalise_cnic,
    normalise_phone,
)
from referral_service.db.models import BlindIndex, CryptoMeta, Subject
from referral_service.db.persist import insert_at_commit
from referral_service.services.vault import Vault

log = logging.getLogger(__name__)

_INDEX_VERSIONS = "referral_service.blind_index_versions"
_INDEX_VALUES = "referral_service.blind_index_values"
ACTIVE_INDEX = "blind_index_version"
NEXT_INDEX = "blind_index_next"
INDEX_CURSOR = "blind_index_cursor"
INDEXED_COLUMNS = ("cnic", "phone")
_NORMALISERS = {"cnic": normalise_cnic, "phone": normalise_phone}


@dataclass
class SubjectMatch:
    """An earlier subject whose CNIC and/or phone equals the new one's (`matched_on`: "cnic", "phone")."""

    subject: Subject
    matched_on: list[str]


class DuplicateMatcher:
    def __init__(self, keys: KeyProvider, indexer: BlindIndexer, vault: Vault) -> None:
        self.keys = keys
        self.indexer = indexer
        self.vault = vault
        self._indexers: dict[int, BlindIndexer] = {indexer.version: indexer}

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
            meta = dict(
                session.execute(
                    select(CryptoMeta.name, CryptoMeta.value).where(CryptoMeta.name.in_((ACTIVE_INDEX, NEXT_INDEX)))
                ).all()
            )
            active = int(meta.get(ACTIVE_INDEX, self.indexer.version))
            cached = (active, int(meta[NEXT_INDEX])) if NEXT_INDEX in meta else (active,)
            session.info[_INDEX_VERSIONS] = cached
        return cached

    def forget_versions(self, session: Session) -> None:
        """After the re-index changed the versions in `crypto_meta`: read them again."""
        session.info.pop(_INDEX_VERSIONS, None)

    def index_value(self, session: Session, version: int, column: str, value: str) -> int:
        # Intake looks a value up and then indexes it: hash once per unit of work. The cache lives
        # and dies with the session, like the data-key cache, so no plaintext outlives the request.
        cache: dict[tuple[int, str, str], int] = session.info.setdefault(_INDEX_VALUES, {})
        key = (version, column, value)
        found = cache.get(key)
        if found is None:
            found = cache[key] = self.indexer_for(version).index(column, value)
        return found

    # -- writing ---------------------------------------------------------------------------------
    def index_subject(self, session: Session, subject: Subject, cnic: str | None, phone: str | None) -> None:
        """Index a new subject's CNIC and phone under every version in use."""
        for column, value in (("cnic", cnic), ("phone", phone)):
            if value:
                for version in self.index_versions(session):
                    # At commit, with the others (db.persist); the subject's row is written already.
                    insert_at_commit(
                        session,
                        BlindIndex,
                        {
                            "subject_id": subject.id,
                            "column": column,
                            "version": version,
                            "value": self.index_value(session, version, column, value),
                        },
                    )

    # -- lookups ---------------------------------------------------------------------------------
    def find_matching_subjects(self, session: Session, cnic: str | None, phone: str | None) -> list[SubjectMatch]:
        """Every earlier, non-erased subject whose CNIC or phone matches exactly, confirmed after decryption,
        oldest first, each with the columns that matched.

        One statement finds the candidates of both columns (a prebuilt Core query: this runs at every
        intake); only when there are any are their subjects loaded and their fields opened.
        A candidate that does not open (a damaged ciphertext or data key) is skipped with a log line
        naming its id: one bad row must not stop an unrelated intake that shares its blind-index value.
        """
        asked = [(column, value) for column, value in (("cnic", cnic), ("phone", phone)) if value]
        if not asked:
            return []
        versions = self.index_versions(session)
        params: dict[str, object] = {}
        pairs = [(column, value, version) for column, value in asked for version in versions]
        for k, (column, value, version) in enumerate(pairs):
            params |= {f"c{k}": column, f"v{k}": version, f"x{k}": self.index_value(session, version, column, value)}
        hits: dict[str, set[str]] = {}
        for subject_id, column in session.connection().execute(_candidates(len(pairs)), params):
            hits.setdefault(column, set()).add(subject_id)
        if not hits:
            return []
        subjects = session.scalars(
            select(Subject)
            .where(Subject.id.in_(set().union(*hits.values())), Subject.erased_at.is_(None))
            .order_by(Subject.created_at, Subject.id)
        ).all()
        found: dict[str, SubjectMatch] = {}
        damaged: set[str] = set()
        for column, value in asked:
            wanted = _NORMALISERS[column](value)
            for candidate in subjects:
                if candidate.id not in hits.get(column, ()) or candidate.id in damaged:
                    continue
                try:
                    stored = self.vault.open_field(
                        session, candidate, "subjects", column, candidate.id, getattr(candidate, f"{column}_ct")
                    )
                    same = bool(stored) and _NORMALISERS[column](stored or "") == wanted
                except (DamagedRecord, CryptoError, InvalidTag, ValueError) as exc:
                    if isinstance(exc, SubjectErased) and not isinstance(exc, DamagedRecord):
                        continue  # erased since the query ran: not a match, not damage
                    # ValueError: a plaintext that is not UTF-8 or no longer normalises is damage too.
                    damaged.add(candidate.id)
                    log.warning(
                        "duplicate check skipped subject %s: its %s does not open (%s)",
                        candidate.id,
                        column,
                        type(exc).__name__,
                    )
                    continue
                if same:
                    match = found.setdefault(candidate.id, SubjectMatch(candidate, []))
                    match.matched_on.append(column)
        return sorted(found.values(), key=lambda m: (m.subject.created_at, m.subject.id))


@functools.cache
def _candidates(pairs: int) -> Select[str, str]:
    """The subjects (not erased) holding any of `pairs` blind-index values (column `c{k}`, version `v{k}`,
    value `x{k}`), with the column that holds it: built and compiled once per number of pairs (two
    columns times the versions in use), then a prepared statement on PostgreSQL."""
    return (
        select(BlindIndex.subject_id, BlindIndex.column)
        .join(Subject, Subject.id == BlindIndex.subject_id)
        .where(
            Subject.erased_at.is_(None),
            or_(
                *(
                    and_(
                        BlindIndex.column == bindparam(f"c{k}"),
                        BlindIndex.version == bindparam(f"v{k}"),
                        BlindIndex.value == bindparam(f"x{k}"),
                    )
                    for k in range(pairs)
                )
            ),
        )
    )
