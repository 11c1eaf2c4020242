"""Key maintenance as services: the keyring check, KEK rotation, blind-index re-keying, KEK retirement.

Each workflow runs here whole (its loop, its batches, a commit per batch, how it resumes); the CLI
(`referral-service keys ...`) only calls it and draws a progress bar from the `progress` callback,
which is told how many items each committed batch finished.

Start-up proves the keyring against canaries of its own, never against subjects' keys: per KEK, a
random key wrapped by it under a fixed canary context, kept in `crypto_meta` (`kek_canary:<id>`)
and written when the KEK is first seen (init, `keys rotate`, or the first start of a database
from before canaries). After that, a data key or field that does not open is one damaged record
(see `services.vault`), and the rest of the service carries on.

Rotation (`keys rotate`) makes a new KEK active and re-wraps every data key under it in key-id
order, a batch per transaction, so a crash loses at most one batch: `rotate` again carries on.
A key that does not open is passed over (it stays under its old KEK and is listed), never retried
in a loop, and then `retire` refuses that KEK and says why.

Blind-index re-keying (`keys reindex`) runs without downtime. While `blind_index_next` exists every
write adds rows for both versions and every lookup asks both (`services.matching`), so a request
never misses a match whichever rows exist yet. The re-index fills the next version in subject-id
order (batches, each committed with the cursor, so it resumes after a crash), catches up on subjects
written by processes that had not noticed the transition, switches the active version, catches up
once more, and deletes the old rows.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session, aliased

from referral_service.crypto import DecryptionError, KeyringError, SubjectErased
from referral_service.crypto.keyring import add_active_kek, retire_kek
from referral_service.db.models import BlindIndex, CryptoMeta, Subject, SubjectKey
from referral_service.domain.errors import Conflict
from referral_service.services.damage import Damage
from referral_service.services.matching import ACTIVE_INDEX, INDEX_CURSOR, INDEXED_COLUMNS, NEXT_INDEX

if TYPE_CHECKING:
    from referral_service.services.ports import Services

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Told, after each committed batch, how many items (data keys, subjects) it finished."""

CANARY_PREFIX = "kek_canary:"
# The canary's wrap context: no subject id can be this (they are UUIDs), so a canary is never
# mistaken for a data key, nor a data key for a canary.
_CANARY_SUBJECT = "referral-service/kek-canary"
_CANARY_KEYS = uuid.UUID("5b1c7f0e-3d1a-4c55-9a57-2f3c6e8d9b10")  # uuid5 namespace of canary key ids
# A KEK without a canary that already wraps stored keys (a database from before canaries) is proved
# by the first of these many keys that opens, so one damaged row cannot fail it.
_LEGACY_SAMPLE = 50
_META_VALUE_MAX = 200  # crypto_meta.value


def _ignore(done: int) -> None:
    return None


# -- the keyring check and canaries -------------------------------------------------------------
def canary_name(kek_id: str) -> str:
    name = CANARY_PREFIX + kek_id
    # crypto_meta.name holds 64 characters; a KMS key ARN is longer.
    return name if len(name) <= 64 else CANARY_PREFIX + "sha256:" + sha256(kek_id.encode()).hexdigest()[:40]


def _canary_key_id(kek_id: str) -> uuid.UUID:
    return uuid.uuid5(_CANARY_KEYS, kek_id)


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


def verify_keys(services: Services) -> None:
    """Start-up check, committed: this keyring is the one the database was created with, every KEK that
    wraps stored data keys is in it and opens its canary; then the active KEK gets a canary if it has none.

    Raises KeyringError (one line) instead of letting a wrong keyring yield garbage later. No
    subject's key decides it: one damaged row must not stop the service.
    """
    with services.uow() as uow:
        _verify_keys(services, uow.session)
        uow.commit()


def _verify_keys(services: Services, session: Session) -> None:
    keys = services.keys
    fingerprint = hmac.new(keys.derive_secret("fingerprint"), b"referral-service", sha256).hexdigest()
    meta = session.get(CryptoMeta, "keyring_fingerprint")
    if meta is None:
        session.add(CryptoMeta(name="keyring_fingerprint", value=fingerprint))
    elif not hmac.compare_digest(meta.value, fingerprint):
        raise KeyringError("REFERRAL_KEYRING: this keyring is not the one this database was created with")
    known = set(keys.kek_ids())
    in_use = _kek_usage(session)
    for kek_id in sorted(in_use):
        if kek_id not in known:
            raise KeyringError(f"REFERRAL_KEYRING: key {kek_id}, which wraps stored data keys, is missing")
    canaries = dict(
        session.execute(
            select(CryptoMeta.name, CryptoMeta.value).where(CryptoMeta.name.startswith(CANARY_PREFIX))
        ).all()
    )
    for kek_id in sorted(in_use):
        stored = canaries.get(canary_name(kek_id))
        if stored is not None and _canary_opens(services, kek_id, stored):
            continue
        # No canary yet (a database from before canaries), or one that does not open: the KEK's
        # own data keys decide. If one opens, the KEK is right and a failed canary was the damage.
        if not _opens_a_data_key(services, session, kek_id):
            raise KeyringError(
                f"REFERRAL_KEYRING: key-encryption key {kek_id} does not open its data keys (wrong keyring?)"
            )
        if stored is not None:
            log.warning(
                "damaged record: table=crypto_meta column=value row=%s reason=the canary does not "
                "open, but the key-encryption key opens its data keys",
                canary_name(kek_id),
            )
            if kek_id == keys.active_kek_id():
                session.execute(delete(CryptoMeta).where(CryptoMeta.name == canary_name(kek_id)))
    _write_canary(services, session)


def _write_canary(services: Services, session: Session) -> str | None:
    """Give the active KEK its canary, if it has none: a random key wrapped by it (through the
    keyring's own wrap call) under a fixed canary context. Returns the KEK id when one was written."""
    kek_id = services.keys.active_kek_id()
    name = canary_name(kek_id)
    if session.get(CryptoMeta, name) is not None:
        return None
    wrapped_by, wrapped = services.keys.wrap_dek(
        os.urandom(32), subject_id=_CANARY_SUBJECT, key_id=_canary_key_id(kek_id)
    )
    if wrapped_by != kek_id:  # rotated between the two calls: that KEK gets its canary at the next start
        return None
    value = base64.b64encode(wrapped).decode()
    if len(value) > _META_VALUE_MAX:
        raise KeyringError(
            f"REFERRAL_KEYRING: a wrapped key of {kek_id} is too long for its canary "
            f"({len(wrapped)} bytes; at most {_META_VALUE_MAX * 3 // 4})"
        )
    session.execute(_insert_if_absent(session, name, value))
    return kek_id


def _canary_opens(services: Services, kek_id: str, stored: str) -> bool:
    try:
        wrapped = base64.b64decode(stored, validate=True)
        services.keys.unwrap_dek(kek_id, wrapped, subject_id=_CANARY_SUBJECT, key_id=_canary_key_id(kek_id))
    except (DecryptionError, binascii.Error, ValueError):
        return False
    return True


def _opens_a_data_key(services: Services, session: Session, kek_id: str) -> bool:
    rows = session.scalars(
        select(SubjectKey)
        .where(SubjectKey.kek_id == kek_id, SubjectKey.wrapped.is_not(None))
        .order_by(SubjectKey.id)
        .limit(_LEGACY_SAMPLE)
    ).all()
    return any(not isinstance(services.vault.key_material(row), Damage) for row in rows)


# -- KEK usage and status ---------------------------------------------------------------------------
def _kek_usage(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(SubjectKey.kek_id, func.count()).where(SubjectKey.wrapped.is_not(None)).group_by(SubjectKey.kek_id)
    ).all()
    return {str(kek): int(n) for kek, n in rows}


def kek_usage(services: Services) -> dict[str, int]:
    """Stored (not destroyed) data keys per KEK."""
    with services.uow() as uow:
        return _kek_usage(uow.session)


def status(services: Services) -> dict[str, Any]:
    """The active KEK, the KEKs of the keyring, data keys per KEK and the blind-index versions."""
    with services.uow() as uow:
        return {
            "active_kek": services.keys.active_kek_id(),
            "keks": services.keys.kek_ids(),
            "data_keys_per_kek": _kek_usage(uow.session),
            "blind_index_versions": list(services.matcher.index_versions(uow.session)),
        }


# -- rotation (`keys rotate`) -------------------------------------------------------------------------
class RewrapBatch(NamedTuple):
    seen: int  # rows looked at (0: the pass is over)
    rewrapped: int
    last_id: str | None  # where the next batch of this pass starts
    damaged: list[Damage]


@dataclass
class RotationResult:
    usage: dict[str, int]  # data keys per KEK once done
    damaged: list[Damage] = field(default_factory=list)  # keys that do not open: left under their old KEK


def start_rotation(services: Services) -> str:
    """Add a new KEK to the keyring file and make it active (running services pick it up from the
    file), and give it its canary. Returns its id; `rotate` then moves the data keys to it."""
    kek_id = add_active_kek(services.settings.keyring_path)
    with services.uow() as uow:
        _write_canary(services, uow.session)
        services.access.record(actor=None, action="keys.rotate", referral_id=None, details={"kek_id": kek_id})
        uow.commit()
    return kek_id


def keys_to_rewrap(services: Services) -> int:
    """Stored data keys not yet under the active KEK (damaged ones included)."""
    active = services.keys.active_kek_id()
    with services.uow() as uow:
        return (
            uow.session.scalar(
                select(func.count())
                .select_from(SubjectKey)
                .where(SubjectKey.wrapped.is_not(None), SubjectKey.kek_id != active)
            )
            or 0
        )


def rewrap_batch(services: Services, session: Session, batch_size: int = 500, *, after: str = "") -> RewrapBatch:
    """Re-wrap up to `batch_size` data keys (ids after `after`) under the active KEK, in `session`.

    A key that does not open is damaged: it is left as it is, under its old KEK, and returned in
    `damaged`; the pass goes on past it (`after`), so a rotation never stops or loops on one row.
    """
    active = services.keys.active_kek_id()
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
        material = services.vault.key_material(row)
        if isinstance(material, Damage):
            damaged.append(material)
            continue
        row.kek_id, row.wrapped = services.keys.wrap_dek(material, subject_id=row.subject_id, key_id=uuid.UUID(row.id))
        rewrapped += 1
    return RewrapBatch(len(rows), rewrapped, rows[-1].id if rows else None, damaged)


def rotate(
    services: Services, *, batch_size: int = 500, pause: float = 0.0, progress: Progress = _ignore
) -> RotationResult:
    """Re-wrap every data key under the active KEK, a committed batch at a time (`pause` seconds
    between batches, to leave the database to the service). Resumable: after a crash, run it again.
    `progress` is told the keys each batch re-wrapped or found damaged."""
    damaged: dict[str, Damage] = {}
    while True:
        # One pass in key-id order; damaged keys are passed over, never retried in a loop. Another
        # pass only if the last one moved keys and some are left (PostgreSQL skips rows locked
        # by a concurrent erasure).
        after, moved = "", 0
        while True:
            with services.uow() as uow:
                batch = rewrap_batch(services, uow.session, batch_size, after=after)
                uow.commit()
            if not batch.seen or batch.last_id is None:
                break
            after, moved = batch.last_id, moved + batch.rewrapped
            new = {d.row_id: d for d in batch.damaged if d.row_id not in damaged}
            damaged.update(new)
            progress(batch.rewrapped + len(new))
            if pause:
                time.sleep(pause)
        if not moved or keys_to_rewrap(services) <= len(damaged):
            break
    return RotationResult(kek_usage(services), list(damaged.values()))


# -- retirement (`keys retire`) -----------------------------------------------------------------------
def damaged_keys(services: Services, kek_id: str, batch_size: int = 500) -> list[Damage]:
    """The data keys wrapped by `kek_id` that do not open (what stops `retire`)."""
    damaged: list[Damage] = []
    after = ""
    while True:
        with services.uow() as uow:
            rows = uow.session.scalars(
                select(SubjectKey)
                .where(SubjectKey.kek_id == kek_id, SubjectKey.wrapped.is_not(None), SubjectKey.id > after)
                .order_by(SubjectKey.id)
                .limit(batch_size)
            ).all()
            if not rows:
                return damaged
            damaged.extend(d for d in map(services.vault.key_damage, rows) if d is not None)
            after = rows[-1].id


def retire(services: Services, kek_id: str) -> None:
    """Remove an old KEK from the keyring once no data key uses it, and forget its canary.

    Conflict (nothing changed) while it still wraps data keys: damaged ones (no rotation can move
    them) or ones a rotation has yet to move.
    """
    in_use = kek_usage(services).get(kek_id, 0)
    damaged = damaged_keys(services, kek_id) if in_use else []
    if damaged:
        raise Conflict(
            f"{kek_id} still wraps {in_use} data key(s), {len(damaged)} of them damaged: they do not "
            "open, so no rotation can move them (restore them from a backup, or erase their "
            "subjects); 'referral-service records check' lists them"
        )
    if in_use:
        raise Conflict(f"{kek_id} still wraps {in_use} data key(s); run 'referral-service keys rotate --resume' first")
    with services.uow() as uow:
        services.access.record(actor=None, action="keys.retire", referral_id=None, details={"kek_id": kek_id})
        uow.commit()
    retire_kek(services.settings.keyring_path, kek_id)
    with services.uow() as uow:
        # The canary of a KEK that is gone proves nothing.
        uow.session.execute(delete(CryptoMeta).where(CryptoMeta.name == canary_name(kek_id)))
        uow.commit()


# -- blind-index re-keying (`keys reindex`) -------------------------------------------------------------
class ReindexPlan(NamedTuple):
    old: int
    new: int
    remaining: int  # subjects not yet re-indexed (what `progress` will count up to)


@dataclass
class ReindexResult:
    old: int
    new: int
    dropped: int  # old-version index rows deleted
    damaged: list[str] = field(default_factory=list)  # subjects skipped: their CNIC or phone does not open


def _set_meta(services: Services, session: Session, name: str, value: str | None) -> None:
    row = session.get(CryptoMeta, name)
    if value is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(CryptoMeta(name=name, value=value))
    else:
        row.value = value
    services.matcher.forget_versions(session)


def begin_reindex(services: Services) -> ReindexPlan:
    """Start writing and reading version N+1 beside N (committed); resumes a re-index already under way."""
    with services.uow() as uow:
        session = uow.session
        versions = services.matcher.index_versions(session)
        if len(versions) == 2:
            old, new = versions
        else:
            old, new = versions[0], versions[0] + 1
            _set_meta(services, session, ACTIVE_INDEX, str(old))
            _set_meta(services, session, NEXT_INDEX, str(new))
            _set_meta(services, session, INDEX_CURSOR, "")
        cursor = session.get(CryptoMeta, INDEX_CURSOR)
        remaining = (
            session.scalar(
                select(func.count())
                .select_from(Subject)
                .where(Subject.erased_at.is_(None), Subject.id > (cursor.value if cursor else ""))
            )
            or 0
        )
        uow.commit()
    return ReindexPlan(old, new, remaining)


def reindex_batch(services: Services, batch_size: int = 500, *, damaged: set[str] | None = None) -> int:
    """Write next-version index rows for the next `batch_size` subjects and move the cursor, committed;
    returns how many were visited (0: none left, or no re-index under way). Subjects whose CNIC or
    phone does not open are skipped (reported) and added to `damaged`."""
    with services.uow() as uow:
        session = uow.session
        versions = services.matcher.index_versions(session)
        if len(versions) < 2:
            return 0
        cursor = session.get(CryptoMeta, INDEX_CURSOR)
        subjects = session.scalars(
            select(Subject)
            .where(Subject.erased_at.is_(None), Subject.id > (cursor.value if cursor else ""))
            .order_by(Subject.id)
            .limit(batch_size)
        ).all()
        if not subjects:
            return 0
        _fill_next(services, session, versions[1], subjects)
        _set_meta(services, session, INDEX_CURSOR, subjects[-1].id)
        if damaged is not None:
            damaged.update(d.subject_id for d in services.vault.damage_seen(session))
        uow.commit()
    return len(subjects)


def reindex(services: Services, *, batch_size: int = 500, progress: Progress = _ignore) -> ReindexResult:
    """The whole re-index: begin (or resume), every batch, the switch, the last catch-up and the
    deletion of the old rows, each step committed; rerun after a crash and it carries on.
    `progress` is told the subjects each batch visited."""
    plan = begin_reindex(services)
    with services.uow() as uow:
        services.access.record(actor=None, action="keys.reindex", referral_id=None)
        uow.commit()
    damaged: set[str] = set()
    while done := reindex_batch(services, batch_size, damaged=damaged):
        progress(done)
    with services.uow() as uow:
        new = _switch_index(services, uow.session)
        damaged.update(d.subject_id for d in services.vault.damage_seen(uow.session))
        uow.commit()
    with services.uow() as uow:
        dropped = _drop_old_index(services, uow.session)
        damaged.update(d.subject_id for d in services.vault.damage_seen(uow.session))
        uow.commit()
    return ReindexResult(plan.old, new, dropped, sorted(damaged))


def _fill_next(services: Services, session: Session, version: int, subjects: Sequence[Subject]) -> None:
    have = set(
        session.execute(
            select(BlindIndex.subject_id, BlindIndex.column).where(
                BlindIndex.version == version, BlindIndex.subject_id.in_([s.id for s in subjects])
            )
        ).all()
    )
    indexer = services.matcher.indexer_for(version)
    for subject in subjects:
        for column in INDEXED_COLUMNS:
            ciphertext = getattr(subject, f"{column}_ct")
            if ciphertext is None or (subject.id, column) in have:
                continue
            try:
                value = services.vault.open_field(session, subject, "subjects", column, subject.id, ciphertext)
            except SubjectErased:  # a DamagedRecord too: skipped, reported, listed by `damage_seen`
                continue
            if value:
                session.add(
                    BlindIndex(
                        subject_id=subject.id, column=column, version=version, value=indexer.index(column, value)
                    )
                )


def _catch_up(services: Services, session: Session, old: int, new: int) -> None:
    """Subjects indexed under `old` only: written by a process that had not yet seen the transition."""
    newer = aliased(BlindIndex)
    lagging = session.scalars(
        select(Subject).where(
            Subject.erased_at.is_(None),
            exists().where(
                BlindIndex.subject_id == Subject.id,
                BlindIndex.version == old,
                ~exists().where(
                    newer.subject_id == BlindIndex.subject_id, newer.column == BlindIndex.column, newer.version == new
                ),
            ),
        )
    ).all()
    if lagging:
        _fill_next(services, session, new, lagging)


def _switch_index(services: Services, session: Session) -> int:
    """After every batch: make the next version active (old rows stay until `_drop_old_index`)."""
    versions = services.matcher.index_versions(session)
    if len(versions) < 2:
        return versions[0]
    old, new = versions
    _catch_up(services, session, old, new)
    _set_meta(services, session, ACTIVE_INDEX, str(new))
    _set_meta(services, session, NEXT_INDEX, None)
    _set_meta(services, session, INDEX_CURSOR, None)
    return new


def _drop_old_index(services: Services, session: Session) -> int:
    """Once the switch has committed: a last catch-up, then delete rows of every other version."""
    active = services.matcher.index_versions(session)[0]
    for old in session.scalars(select(BlindIndex.version).where(BlindIndex.version != active).distinct()).all():
        _catch_up(services, session, old, active)
    result = session.execute(delete(BlindIndex).where(BlindIndex.version != active))
    return int(getattr(result, "rowcount", 0) or 0)
