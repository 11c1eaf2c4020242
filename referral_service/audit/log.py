"""The audit log: sealed entries, a Merkle tree over them, signed checkpoints.

Three steps, as in transparency-dev/tessera:

1. **Append** (`AuditLog.append`): an action's entry is sealed and added to the action's own
   transaction, so the entry exists exactly when the action does. Nothing is sequenced here: on
   PostgreSQL an earlier id may commit later, and a counter would make every request wait on one row.
   The sealed rows wait in the transaction and go in with one `executemany` just before it commits
   (or before a statement of that transaction reads `audit_entries`): a list page reveals a name per
   row, and one `INSERT` each was a round trip per row on PostgreSQL.
2. **Integrate** (`AuditLog.integrate`): in its own transaction, one integrator at a time (a lock on
   the single `audit_head` row; others skip) gives the committed, unsequenced entries the next
   indexes, stores the leaf hashes and every node they complete, moves the head and signs a
   checkpoint of the new size. Any number of integrators may run; each step has one winner, and the
   tree only ever grows, so no two checkpoints are inconsistent.
3. **Verify** (`AuditLog.verify`): recompute every leaf from the stored ciphertexts, compare with the
   stored leaves and the signed checkpoint, name the first bad entry.

What an entry holds, and under which key (all derived from the keyring, `AuditKeys`):

* the record (who: actor, role, organisation; what: action, referral, subject, outcome; request id,
  purpose of use), sealed with AES-256-GCM under the audit key;
* the details (which fields were seen, fixed codes), sealed under the subject's own data key when
  the entry is about a subject, so `subjects erase` erases them too, else under the audit key;
* blind indexes of actor, action, referral and subject (HMAC-SHA256 under the audit search key) for
  the auditors' queries, and a keyed commitment (HMAC) to the plaintext;
* `at`, in the clear, for time ranges.

The leaf is SHA-256(0x00 ‖ canonical bytes) of these stored values (`verifier.entry_bytes`): never a
hash of guessable plaintext, and erasure changes no stored byte of the entry.
"""

from __future__ import annotations

import base64
import hmac
import json
import multiprocessing
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from referral_service.audit import merkle
from referral_service.audit.leaves import range_tree, range_tree_at
from referral_service.audit.note import Signer, sign_checkpoint
from referral_service.audit.verifier import (
    EMPTY_ROOT,
    Checkpoint,
    VerificationError,
    VerifierKey,
    entry_bytes,
    leaf_hash,
    node_hash,
    open_checkpoint,
)
from referral_service.crypto.envelope import encode_parts
from referral_service.crypto.keyring import KeyProvider
from referral_service.db.models import AuditCheckpoint, AuditEntry, AuditHead, AuditNode
from referral_service.db.persist import insert_at_commit, pending_rows, write_pending

SYSTEM = "system"
#: From this many entries, a full verify recomputes the leaves in several processes.
PARALLEL_VERIFY_FROM = 200_000
#: Where a split verify cuts the log: at multiples of 2**ALIGN_LEVEL, so each part's nodes up to that
#: level are nodes of the whole tree.
ALIGN_LEVEL = 12
HEAD_ID = 1
_BLIND_SIZE = 16


def uuid7(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; ids sort by time."""
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def format_at(at: datetime) -> str:
    """`at` as it goes into the canonical bytes: RFC 3339, UTC, always with microseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AuditEvent:
    """What one entry records, shaped after FHIR AuditEvent: agent (actor, role, organisation),
    entity (referral, subject, the fields), action, outcome, purpose of use."""

    action: str
    outcome: str = "allowed"
    actor_id: str = SYSTEM
    role: str = SYSTEM
    partner_id: str | None = None
    referral_id: str | None = None
    subject_id: str | None = None
    request_id: str | None = None
    purpose: str | None = None
    fields: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "role": self.role,
            "partner_id": self.partner_id,
            "action": self.action,
            "referral_id": self.referral_id,
            "subject_id": self.subject_id,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "purpose": self.purpose,
        }

    def details_document(self) -> dict[str, Any]:
        return {"fields": list(self.fields), **dict(self.details)}


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


class AuditKeys:
    """The log's keys, derived from the keyring's root (so a KMS adapter holds them too)."""

    def __init__(self, keys: KeyProvider, origin: str) -> None:
        self._search = keys.derive_secret("audit/search/v1")
        self._seal = AESGCM(keys.derive_secret("audit/seal/v1"))
        self._commit = keys.derive_secret("audit/commitment/v1")
        self.signer = Signer.from_seed(origin, keys.derive_secret("audit/checkpoint-signing/v1"))

    @property
    def verifier_key(self) -> VerifierKey:
        return self.signer.verifier_key

    def blind(self, kind: str, value: str) -> bytes:
        return hmac.digest(self._search, encode_parts(kind.encode(), value.encode()), "sha256")[:_BLIND_SIZE]

    def seal(self, purpose: str, entry_id: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._seal.encrypt(
            nonce, plaintext, encode_parts(b"audit/" + purpose.encode(), entry_id.encode())
        )

    def open(self, purpose: str, entry_id: str, sealed: bytes) -> bytes:
        """Raises `InvalidTag` when the ciphertext or its binding to the entry was changed."""
        sealed = bytes(sealed)
        return self._seal.decrypt(
            sealed[:12], sealed[12:], encode_parts(b"audit/" + purpose.encode(), entry_id.encode())
        )

    def commit(self, entry_id: str, record: bytes, details: bytes) -> bytes:
        return hmac.digest(self._commit, encode_parts(entry_id.encode(), record, details), "sha256")


class SubjectSealer(Protocol):
    """Seals and opens an entry's details under the subject's own data key (the vault)."""

    def seal_audit_details(self, session: Session, subject_id: str, entry_id: str, plaintext: str) -> bytes | None:
        """The sealed details, or None when the subject's key is gone or damaged (then the audit key seals)."""
        ...

    def open_audit_details(self, session: Session, subject_id: str, entry_id: str, sealed: bytes) -> str | None:
        """The details, or None when the subject was erased; raises DamagedRecord when they do not open."""
        ...


@dataclass(frozen=True)
class OpenedEntry:
    """An entry as an auditor reads it."""

    id: str
    at: datetime
    index: int | None
    leaf_hash: bytes
    record: dict[str, Any] | None  # None: the sealed record does not open (a damaged or tampered row)
    details: dict[str, Any] | None
    details_state: str  # "ok", "erased" (the subject's key was destroyed) or "damaged"


@dataclass(frozen=True)
class AuditFilter:
    referral_id: str | None = None
    subject_id: str | None = None
    actor_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    head: str | None  # the signed checkpoint the log was checked against
    size: int
    root: bytes
    first_bad: int | None = None
    first_bad_id: str | None = None
    problem: str | None = None
    unsequenced: int = 0
    extends: bool | None = None  # given an earlier checkpoint: does today's log extend it?

    def line(self) -> str:
        if self.ok:
            tail = "; extends the given checkpoint" if self.extends else ""
            return f"audit log intact: {self.entries} entries, root {_b64(self.root)}{tail}"
        where = f"first bad entry: index {self.first_bad}" if self.first_bad is not None else "no entry named"
        ident = f" (id {self.first_bad_id})" if self.first_bad_id else ""
        return f"audit log FAILED verification: {self.problem}; {where}{ident}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


ENTRY_COLUMNS = (
    AuditEntry.id,
    AuditEntry.at,
    AuditEntry.actor_bi,
    AuditEntry.action_bi,
    AuditEntry.referral_bi,
    AuditEntry.subject_bi,
    AuditEntry.record_ct,
    AuditEntry.details_key,
    AuditEntry.details_ct,
    AuditEntry.commitment,
)


def row_leaf(row: Any) -> bytes:
    """The leaf hash of a stored entry (a model or a row of `ENTRY_COLUMNS`)."""
    return leaf_hash(
        entry_bytes(
            entry_id=row.id,
            at=format_at(row.at),
            actor_bi=row.actor_bi,
            action_bi=row.action_bi,
            referral_bi=row.referral_bi,
            subject_bi=row.subject_bi,
            record_ct=row.record_ct,
            details_key=row.details_key,
            details_ct=row.details_ct,
            commitment=row.commitment,
        )
    )


class _DbNodes:
    """`merkle.NodeReader` over `audit_nodes`, with the nodes of one step added in memory."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: dict[tuple[int, int], bytes] = {}

    def load(self, ids: Sequence[tuple[int, int]]) -> None:
        wanted = [i for i in ids if i not in self.cache]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self.session.execute(
                select(AuditNode.level, AuditNode.idx, AuditNode.hash).where(
                    tuple_(AuditNode.level, AuditNode.idx).in_(chunk)
                )
            )
            for level, index, value in rows:
                self.cache[(level, index)] = bytes(value)

    def get(self, level: int, index: int) -> bytes:
        if (level, index) not in self.cache:
            self.load([(level, index)])
        return self.cache[(level, index)]


def pending_entries(session: Session) -> int:
    """How many appended entries of `session`'s transaction are still to be inserted (at its commit)."""
    return pending_rows(session, AuditEntry)


class AuditLog:
    def __init__(
        self,
        keys: AuditKeys,
        clock: Callable[[], datetime],
        subjects: SubjectSealer | None = None,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.subjects = subjects

    @property
    def origin(self) -> str:
        return self.keys.signer.name

    # -- 1. append (in the action's transaction) ------------------------------------------------
    def append(self, session: Session, event: AuditEvent) -> str:
        """Seal the entry and add it to `session`'s transaction; returns its id. The row is inserted
        with the transaction's other entries when it commits (`write_pending`): straight on the
        connection, no ORM object, and no autoflush of the caller's half-built rows."""
        # The transaction begins here if it has not (on SQLite: the write lock, as the INSERT took it),
        # so a rollback or close of the session ends it and drops the entry with it.
        session.connection()
        now = self.clock()
        entry_id = uuid7(now)
        record = _json(event.record())
        details = _json(event.details_document())
        details_key, details_ct = "audit", None
        if event.subject_id is not None and self.subjects is not None:
            with session.no_autoflush:
                details_ct = self.subjects.seal_audit_details(session, event.subject_id, entry_id, details.decode())
            if details_ct is not None:
                details_key = "subject"
        if details_ct is None:
            details_ct = self.keys.seal("details", entry_id, details)
        blind = self.keys.blind
        insert_at_commit(
            session,
            AuditEntry,
            {
                "id": entry_id,
                "at": now,
                "actor_bi": blind("actor", event.actor_id),
                "action_bi": blind("action", event.action),
                "referral_bi": blind("referral", event.referral_id) if event.referral_id else None,
                "subject_bi": blind("subject", event.subject_id) if event.subject_id else None,
                "record_ct": self.keys.seal("record", entry_id, record),
                "details_key": details_key,
                "details_ct": details_ct,
                "commitment": self.keys.commit(entry_id, record, details),
            },
        )
        return entry_id

    # -- reading (auditors) -------------------------------------------------------------------
    def open_entry(self, session: Session, row: AuditEntry) -> OpenedEntry:
        """An entry in the clear; a row that does not open fails alone (record None, details damaged)."""
        try:
            record_raw = self.keys.open("record", row.id, row.record_ct)
            record: dict[str, Any] | None = json.loads(record_raw)
        except (InvalidTag, ValueError):
            return OpenedEntry(row.id, row.at, row.idx, row_leaf(row), None, None, "damaged")
        details: dict[str, Any] | None = None
        state = "ok"
        try:
            if row.details_key == "subject":
                subject_id = record.get("subject_id") if isinstance(record, dict) else None
                text = (
                    self.subjects.open_audit_details(session, subject_id, row.id, row.details_ct)
                    if self.subjects is not None and subject_id
                    else None
                )
                if text is None:
                    state = "erased"
                else:
                    details = json.loads(text)
            else:
                details_raw = self.keys.open("details", row.id, row.details_ct)
                details = json.loads(details_raw)
        except Exception:  # noqa: BLE001 - a detail that does not open is one damaged entry, never a failed page
            details, state = None, "damaged"
        if (
            state == "ok"
            and details is not None
            and not hmac.compare_digest(row.commitment, self.keys.commit(row.id, record_raw, _json(details)))
        ):
            state = "damaged"
        return OpenedEntry(row.id, row.at, row.idx, row_leaf(row), record, details, state)

    def query(
        self, session: Session, where: AuditFilter, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[AuditEntry]:
        """Newest first; `after` is the (at, id) of the last entry of the previous page."""
        blind = self.keys.blind
        conditions = []
        if where.referral_id:
            conditions.append(AuditEntry.referral_bi == blind("referral", where.referral_id))
        if where.subject_id:
            conditions.append(AuditEntry.subject_bi == blind("subject", where.subject_id))
        if where.actor_id:
            conditions.append(AuditEntry.actor_bi == blind("actor", where.actor_id))
        if where.action:
            conditions.append(AuditEntry.action_bi == blind("action", where.action))
        if where.since:
            conditions.append(AuditEntry.at >= where.since)
        if where.until:
            conditions.append(AuditEntry.at < where.until)
        if after is not None:
            at, entry_id = after
            conditions.append(or_(AuditEntry.at < at, and_(AuditEntry.at == at, AuditEntry.id < entry_id)))
        stmt = select(AuditEntry).where(*conditions).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
        return list(session.scalars(stmt))

    # -- 2. integrate (its own transaction) ------------------------------------------------------
    def integrate(self, session: Session, *, batch: int = 5000, wait: bool = False) -> int:
        """One integration step in `session`'s transaction (the caller commits). Returns how many
        entries it sequenced: 0 when there was nothing to do or (unless `wait`) another integrator
        holds the head, which workers skip and commands that must see everything sequenced wait for."""
        head = session.execute(
            select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update(skip_locked=not wait)
        ).scalar_one_or_none()
        if head is None:
            return 0
        rows = session.execute(
            select(*ENTRY_COLUMNS).where(AuditEntry.idx.is_(None)).order_by(AuditEntry.at, AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            return 0
        size = int(head.size)
        nodes = _DbNodes(session)
        nodes.load(merkle.compact_range(0, size))
        leaves = [row_leaf(row) for row in rows]
        new_nodes = merkle.append_nodes(nodes, size, leaves)
        session.execute(insert(AuditNode), [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in new_nodes.items()])
        session.execute(
            update(AuditEntry),
            [{"id": row.id, "idx": size + offset} for offset, row in enumerate(rows)],
        )
        nodes.cache.update(new_nodes)
        new_size = size + len(rows)
        root = merkle.root(nodes, new_size)
        now = self.clock()
        head.size, head.root, head.updated_at = new_size, root, now
        note = sign_checkpoint(Checkpoint(self.origin, new_size, root), self.keys.signer)
        session.add(AuditCheckpoint(size=new_size, root=root, note=note, signed_at=now))
        return len(rows)

    # -- the head, checkpoints and proofs --------------------------------------------------------
    def head(self, session: Session) -> tuple[int, bytes]:
        row = session.get(AuditHead, HEAD_ID)
        return (int(row.size), bytes(row.root)) if row is not None else (0, EMPTY_ROOT)

    def latest_checkpoint(self, session: Session) -> str:
        """The newest signed checkpoint; the empty log's when nothing has been integrated yet."""
        note = session.scalars(select(AuditCheckpoint.note).order_by(AuditCheckpoint.size.desc()).limit(1)).first()
        return note or sign_checkpoint(Checkpoint(self.origin, 0, EMPTY_ROOT), self.keys.signer)

    def inclusion_proof(self, session: Session, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """(leaf hash, proof) of entry `index` in the tree of `size`. ValueError when out of range."""
        self._check_size(session, size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not in a tree of size {size}")
        plan = merkle.inclusion_plan(index, size)
        nodes = _DbNodes(session)
        nodes.load([(0, index), *plan.node_ids])
        return nodes.get(0, index), plan.fetch(nodes)

    def consistency_proof(self, session: Session, first: int, second: int) -> list[bytes]:
        self._check_size(session, second)
        if not 0 < first <= second:
            raise ValueError(f"no consistency proof from size {first} to size {second} (needs 0 < first <= second)")
        plan = merkle.consistency_plan(first, second)
        nodes = _DbNodes(session)
        nodes.load(plan.node_ids)
        return plan.fetch(nodes)

    def _check_size(self, session: Session, size: int) -> None:
        current, _ = self.head(session)
        if not 0 < size <= current:
            raise ValueError(f"the log has {current} entries; a tree size is from 1 to {current}")

    # -- 3. verify -------------------------------------------------------------------------------
    def verify(
        self,
        session: Session,
        *,
        earlier: str | bytes | None = None,
        key: VerifierKey | None = None,
        workers: int | None = None,
        nodes: bool = False,
    ) -> VerifyReport:
        """Recompute the whole log from the stored entries and check it against every signed checkpoint
        in the database (signed by `key`, default the log's own) and, given `earlier` (a checkpoint kept
        outside the database), that the log extends it. Stops at the first problem and names the first
        entry it concerns.

        Every leaf is recomputed from the entry's stored bytes and compared with the stored leaf, every
        stored node with the one recomputed from the leaves, every checkpoint's signature and root with
        the recomputed tree. Holds the recomputed tree in memory (about 130 MB per million entries).
        `workers`: processes that recompute leaves for a large log (default: one per CPU, at most 4)."""
        key = key or self.keys.verifier_key
        unsequenced = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.idx.is_(None))) or 0
        stored_size, stored_root = self.head(session)
        report = VerifyReport(True, 0, None, 0, EMPTY_ROOT, unsequenced=int(unsequenced))

        # Every checkpoint the log signed, oldest first: each must carry the log's signature and be the
        # root of the entries up to its size, so a rewrite is placed between two checkpoints.
        signed: list[tuple[int, bytes]] = []
        for size, root, note in session.execute(
            select(AuditCheckpoint.size, AuditCheckpoint.root, AuditCheckpoint.note).order_by(AuditCheckpoint.size)
        ):
            try:
                checkpoint = open_checkpoint(note, key, self.origin)
            except VerificationError as exc:
                first = signed[-1][0] if signed else 0
                return self._fail(
                    report, f"the checkpoint of size {size} is not signed by the log's key ({exc})", first
                )
            if (checkpoint.size, checkpoint.root_hash) != (int(size), bytes(root)):
                first = signed[-1][0] if signed else 0
                return self._fail(report, f"the checkpoint of size {size} was altered", first)
            signed.append((checkpoint.size, checkpoint.root_hash))
            report.head = note
        if earlier is not None:
            try:
                old = open_checkpoint(earlier, key, self.origin)
            except VerificationError as exc:
                return self._fail(report, f"the given checkpoint does not verify ({exc})")
            signed.append((old.size, old.root_hash))
            signed.sort()

        # 1. Every leaf from the entry's stored bytes, in index order; indexes must run 0, 1, 2, ...
        lowest, _highest, held, distinct = session.execute(
            select(
                func.min(AuditEntry.idx),
                func.max(AuditEntry.idx),
                func.count(AuditEntry.idx),
                func.count(AuditEntry.idx.distinct()),
            )
        ).one()
        held = int(held or 0)
        if lowest is not None and lowest < 0:
            return self._fail(
                report,
                f"an entry holds the index {lowest}, which is no position in a log",
                0,
                self._id_at(session, lowest),
            )
        if held != int(distinct or 0):
            doubled = session.scalar(
                select(AuditEntry.idx).group_by(AuditEntry.idx).having(func.count() > 1).order_by(AuditEntry.idx)
            )
            return self._fail(
                report, f"index {doubled} is held by more than one entry", doubled, self._id_at(session, doubled)
            )
        # 2. The leaves the tree holds must be these; 3. the tree above them, level by level.
        tree = self._recompute(session, held, workers)
        if tree.missing is not None:
            after = session.scalar(select(func.min(AuditEntry.idx)).where(AuditEntry.idx > tree.missing))
            return self._fail(
                report, f"entry {tree.missing} is missing (the next stored index is {after})", tree.missing
            )
        if tree.mismatch is not None:
            return self._fail(
                report,
                "the entry's stored bytes do not give the leaf hash the tree holds",
                tree.mismatch,
                self._id_at(session, tree.mismatch),
            )
        count = held
        stored_leaves = session.scalar(select(func.count()).select_from(AuditNode).where(AuditNode.level == 0)) or 0
        if stored_leaves != count:
            return self._fail(report, f"the tree holds {stored_leaves - count} leaves with no entry", count)
        report.entries = report.size = count
        levels = tree.levels
        reader = _Levels(levels)
        report.root = merkle.root(reader, count) if count else EMPTY_ROOT

        # 4. Each signed checkpoint is the root of the entries up to its size.
        previous = 0
        for size, root in signed:
            if size > count:
                return self._fail(
                    report,
                    f"the log holds {count} entries but a checkpoint was signed at size {size}: "
                    f"entries from index {count} on were removed",
                    count,
                )
            if merkle.root(reader, size) != root:
                return self._fail(
                    report,
                    f"the entries from index {previous} to {size - 1} do not give the root signed at size "
                    f"{size}: one of them was changed, inserted or removed",
                    previous,
                )
            previous = size
        last_signed = signed[-1][0] if signed else 0
        if count > last_signed:
            return self._fail(
                report, f"{count - last_signed} entries are beyond the last signed checkpoint", last_signed
            )
        if (stored_size, stored_root) != (count, report.root):
            return self._fail(report, "the tree head does not match the entries", None)

        # 5. With `nodes`: every stored node above the leaves, as recomputed. They are a cache that
        # proofs are served from (a wrong one gives a proof that fails at the auditor's end), not part
        # of what the checkpoints sign, so a routine verify leaves them out.
        if nodes:
            for level in range(1, len(levels)):
                kept, made = self._stored_level(session, level), levels[level]
                if kept != made:
                    index = next(
                        (i // 32 for i in range(0, len(made), 32) if kept[i : i + 32] != made[i : i + 32]),
                        len(made) // 32,
                    )
                    return self._fail(report, f"the stored tree node ({level}, {index}) is not the recomputed one")
            higher = session.scalar(select(func.count()).select_from(AuditNode).where(AuditNode.level >= len(levels)))
            if higher:
                return self._fail(report, f"the tree holds {higher} nodes above its root")
        if earlier is not None:
            report.extends = True
        return report

    @staticmethod
    def _fail(
        report: VerifyReport, problem: str, index: int | None = None, entry_id: str | None = None
    ) -> VerifyReport:
        report.ok, report.problem, report.first_bad, report.first_bad_id = False, problem, index, entry_id
        return report

    def _id_at(self, session: Session, index: int | None) -> str | None:
        return session.scalar(select(AuditEntry.id).where(AuditEntry.idx == index).limit(1))

    def _recompute(self, session: Session, size: int, workers: int | None) -> _Tree:
        """Entries 0..size-1: their leaves recomputed from the stored bytes and compared with the
        stored leaves, and every complete node above them. A large log is split over processes at
        multiples of 2**ALIGN_LEVEL, each reading its range on its own connection and building the
        nodes up to that level (entries below the head never change, so each sees the same rows);
        the few levels above are built here."""
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        if workers <= 1 or size < PARALLEL_VERIFY_FROM:
            connection = session.connection()
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                whole = range_tree(cursor, connection.dialect.name, 0, size)
            finally:
                cursor.close()
            return _Tree(whole.missing, whole.mismatch, whole.levels)
        unit = 1 << ALIGN_LEVEL
        bounds = sorted({0, size, *(size * k // workers // unit * unit for k in range(1, workers))})
        url = session.get_bind().engine.url.render_as_string(hide_password=False)
        with ProcessPoolExecutor(max_workers=len(bounds) - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(
                pool.map(range_tree_at, [url] * (len(bounds) - 1), bounds[:-1], bounds[1:], [ALIGN_LEVEL] * len(bounds))
            )
        for part in parts:  # the first problem in index order
            if part.missing is not None or part.mismatch is not None:
                return _Tree(part.missing, part.mismatch, [])
        depth = max(len(p.levels) for p in parts)
        levels = [b"".join(p.levels[k] for p in parts if k < len(p.levels)) for k in range(depth)]
        top = levels[-1]
        nodes = [top[i : i + 32] for i in range(0, len(top), 32)]
        while len(nodes) > 1:
            pairs = iter(nodes[: len(nodes) & ~1])
            nodes = [node_hash(left, right) for left, right in zip(pairs, pairs, strict=True)]
            levels.append(b"".join(nodes))
        return _Tree(None, None, levels)

    def _stored_level(self, session: Session, level: int) -> bytes:
        connection = session.connection()
        mark = "?" if connection.dialect.name == "sqlite" else "%s"
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(f"SELECT hash FROM audit_nodes WHERE level = {mark} ORDER BY idx", (level,))  # noqa: S608
            return b"".join(bytes(h) for (h,) in cursor.fetchall())
        finally:
            cursor.close()


@dataclass
class _Tree:
    missing: int | None
    mismatch: int | None
    levels: list[bytes]  # levels[k]: every complete level-k node, concatenated


class _Levels:
    """`merkle.NodeReader` over a tree recomputed in memory."""

    def __init__(self, levels: list[bytes]) -> None:
        self.levels = levels

    def get(self, level: int, index: int) -> bytes:
        return self.levels[level][index * 32 : index * 32 + 32]


__all__ = [
    "AuditEvent",
    "AuditFilter",
    "AuditKeys",
    "AuditLog",
    "OpenedEntry",
    "SubjectSealer",
    "VerifyReport",
    "format_at",
    "pending_entries",
    "row_leaf",
    "uuid7",
    "write_pending",
]
