"""Tampering with the audit log as someone with the whole database (but not the keyring) would.

Each scenario rewrites the stored log directly in SQL and says which entry verification must name
first. Shared by the SQLite (tests/e2e) and PostgreSQL (tests/integration) tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, select, text

from referral_service.audit.note import Signer, sign_checkpoint
from referral_service.audit.verifier import Checkpoint
from referral_service.db.models import AuditCheckpoint, AuditEntry
from referral_service.domain.model import Actor, Role
from referral_service.services.audit import integrate_once
from referral_service.services.ports import Services

BATCHES = (10, 10, 10)  # three integration steps: checkpoints at sizes 10, 20 and 30
SIZE = sum(BATCHES)
TARGET = 14  # the entry most scenarios tamper with (in the second batch)


def fill_log(services: Services) -> None:
    """Thirty entries of several actors and actions, integrated in three steps (three checkpoints)."""
    actors = [Actor("cw-1", Role.CASEWORKER), Actor("sup-1", Role.SUPERVISOR), Actor("p-1", Role.PARTNER, "org-1")]
    n = 0
    for batch in BATCHES:
        for _ in range(batch):
            actor = actors[n % len(actors)]
            with services.uow() as uow:
                services.access.record(
                    actor=actor,
                    action="referral.read" if n % 2 else "referral.list",
                    referral_id=f"ref-{n % 4}",
                    outcome="denied" if n % 5 == 0 else "allowed",
                    details={"n": str(n)},
                )
                uow.commit()
            n += 1
        assert integrate_once(services) == batch


def _flip(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 0x01])


def _entry(conn: Connection, index: int) -> dict[str, object]:
    row = conn.execute(select(AuditEntry.__table__).where(AuditEntry.idx == index)).mappings().one()
    return dict(row)


def _set(conn: Connection, index: int, **values: object) -> None:
    conn.execute(AuditEntry.__table__.update().where(AuditEntry.idx == index).values(**values))


def edit_detail(conn: Connection) -> None:
    _set(conn, TARGET, details_ct=_flip(bytes(_entry(conn, TARGET)["details_ct"])))  # type: ignore[arg-type]


def edit_timestamp(conn: Connection) -> None:
    _set(conn, TARGET, at=_entry(conn, TARGET)["at"] + timedelta(seconds=1))  # type: ignore[operator]


def edit_actor(conn: Connection) -> None:
    # Another actor's blind index, copied from one of their entries: a well-formed lie about who did it.
    mine = _entry(conn, TARGET)["actor_bi"]
    other = conn.execute(select(AuditEntry.actor_bi).where(AuditEntry.actor_bi != mine).limit(1)).scalar_one()
    _set(conn, TARGET, actor_bi=other)


def edit_record(conn: Connection) -> None:
    _set(conn, TARGET, record_ct=_flip(bytes(_entry(conn, TARGET)["record_ct"])))  # type: ignore[arg-type]


def delete_entry(conn: Connection) -> None:
    conn.execute(AuditEntry.__table__.delete().where(AuditEntry.idx == TARGET))


def insert_entry(conn: Connection) -> None:
    # A copy of an entry slipped in as the next one, and the ones after moved up to make room.
    forged = _entry(conn, 3)
    forged["id"] = "019a0000-0000-7000-8000-000000000000"
    conn.execute(text("UPDATE audit_entries SET idx = idx + 1000 WHERE idx >= :i"), {"i": TARGET})
    conn.execute(text("UPDATE audit_entries SET idx = idx - 999 WHERE idx >= :i"), {"i": TARGET + 1000})
    forged["idx"] = TARGET
    conn.execute(AuditEntry.__table__.insert().values(**forged))


def reorder_entries(conn: Connection) -> None:
    a, b = _entry(conn, TARGET), _entry(conn, TARGET + 1)
    _set(conn, TARGET, idx=-1)
    _set(conn, TARGET + 1, idx=TARGET)
    conn.execute(AuditEntry.__table__.update().where(AuditEntry.idx == -1).values(idx=TARGET + 1))
    assert a["id"] != b["id"]


def truncate_tail(conn: Connection) -> None:
    # The last five entries and their leaves go; the signed checkpoint of size 30 stays behind.
    conn.execute(text("DELETE FROM audit_entries WHERE idx >= :i"), {"i": SIZE - 5})
    conn.execute(text("DELETE FROM audit_nodes WHERE level = 0 AND idx >= :i"), {"i": SIZE - 5})


def rewrite_and_resign(conn: Connection) -> None:
    # Everything rewritten consistently: an entry changed, the tree rebuilt from the changed leaves,
    # every checkpoint re-signed with the attacker's own key under the log's name.
    from referral_service.audit import merkle
    from referral_service.audit.log import row_leaf

    edit_detail(conn)
    rows = conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.idx)).all()
    tree = merkle.MerkleTree()
    tree.append([row_leaf(r) for r in rows])
    conn.execute(text("DELETE FROM audit_nodes"))
    store = tree.store
    assert isinstance(store, merkle.MemoryNodeStore)
    nodes = [
        {"level": level, "idx": index, "hash": store.get(level, index)}
        for level in range(SIZE.bit_length())
        for index in range(SIZE >> level)
    ]
    conn.execute(text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"), nodes)
    origin = conn.execute(select(AuditCheckpoint.note)).scalars().first().split("\n", 1)[0]  # type: ignore[union-attr]
    forger = Signer.generate(origin)
    conn.execute(text("DELETE FROM audit_checkpoints"))
    for size in (10, 20, 30):
        root = tree.root(size)
        note = sign_checkpoint(Checkpoint(origin, size, root), forger)
        conn.execute(AuditCheckpoint.__table__.insert().values(size=size, root=root, note=note, signed_at=rows[0].at))
    conn.execute(text("UPDATE audit_head SET root = :root"), {"root": tree.root(SIZE)})


def rewrite_tree_keep_checkpoints(conn: Connection) -> None:
    # An entry changed and its leaf and every node above it recomputed, the head moved to the new
    # root; only the signed checkpoints cannot be redone without the key.
    from referral_service.audit import merkle
    from referral_service.audit.log import row_leaf

    edit_detail(conn)
    rows = conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.idx)).all()
    tree = merkle.MerkleTree()
    tree.append([row_leaf(r) for r in rows])
    store = tree.store
    assert isinstance(store, merkle.MemoryNodeStore)
    conn.execute(text("DELETE FROM audit_nodes"))
    conn.execute(
        text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
        [
            {"level": level, "idx": index, "hash": store.get(level, index)}
            for level in range(SIZE.bit_length())
            for index in range(SIZE >> level)
        ],
    )
    conn.execute(text("UPDATE audit_head SET root = :root"), {"root": tree.root(SIZE)})


@dataclass(frozen=True)
class Tampering:
    name: str
    apply: Callable[[Connection], None]
    first_bad: int
    says: str  # a few words verification must use


TAMPERINGS = (
    Tampering("edit a detail", edit_detail, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("edit a timestamp", edit_timestamp, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("edit an actor", edit_actor, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("edit the sealed record", edit_record, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("delete an entry", delete_entry, TARGET, f"entry {TARGET} is missing"),
    Tampering("insert an entry", insert_entry, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("reorder two entries", reorder_entries, TARGET, "stored bytes do not give the leaf hash"),
    Tampering("truncate the tail", truncate_tail, SIZE - 5, "were removed"),
    Tampering(
        "rewrite the tree under the signed checkpoints", rewrite_tree_keep_checkpoints, 10, "do not give the root"
    ),
    Tampering("rewrite everything and re-sign with another key", rewrite_and_resign, 0, "not signed by the log's key"),
)
