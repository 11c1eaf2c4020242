"""RFC 9162 Merkle tree of the audit log, kept as stored complete subtrees so that nothing is recomputed.

Hashing (0x00 leaf / 0x01 node domain separation over SHA-256) and proof verification live in
`referral_service.audit.verifier`, the file auditors run, and are re-exported here; this module adds
what only the log itself does: growing the tree and generating proofs.

The tree is a set of *complete* nodes. Node (level, index) is the root of the perfect subtree over
leaves [index·2^level, (index+1)·2^level); level 0 holds the leaf hashes. Once such a subtree is
complete it never changes, so every complete node is stored as the tree grows, as
transparency-dev/tessera's tiles and Trillian's compact ranges do (about two 32-byte hashes per
leaf). A tree of any size n, earlier ones included, is then covered by at most log2(n) stored
nodes, one per set bit of n (its compact range):

* the root of size n folds those nodes right to left (O(log n) reads);
* appending a batch reads the compact range of the current size once and writes each leaf plus each
  node the batch completes (O(batch + log n) hashes, each write O(1));
* a proof is a list of subtree hashes (RFC 9162 §2.1.3.1, §2.1.4.1). Each is a stored node, except
  at most one per proof: an incomplete subtree on the tree's right edge, whose hash is folded from
  the stored nodes of its compact range. A proof therefore needs O(log n) reads and hashes.

The `*_plan` functions say which nodes a proof needs before any is read, so a database-backed store
can fetch them in one query (`plan.node_ids`) and `plan.assemble(hashes)` builds the proof.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from referral_service.audit.verifier import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryNodeStore",
    "MerkleTree",
    "NodeId",
    "NodeReader",
    "NodeStore",
    "ProofError",
    "ProofPlan",
    "append",
    "append_nodes",
    "compact_range",
    "consistency_plan",
    "consistency_proof",
    "inclusion_plan",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "root_plan",
    "verify_consistency",
    "verify_inclusion",
]


#: A complete node (level, index): the root of the perfect subtree over leaves
#: [index·2^level, (index+1)·2^level). Plain tuples: the append path makes millions of them.
NodeId = tuple[int, int]


class NodeReader(Protocol):
    """Reads stored complete nodes."""

    def get(self, level: int, index: int) -> bytes:
        """The hash of complete node (level, index); raises `KeyError` if it is not stored."""
        ...


class NodeStore(NodeReader, Protocol):
    """Stores complete nodes; the tree only ever adds nodes, never changes one."""

    def put_many(self, nodes: Mapping[NodeId, bytes]) -> None:
        """Store these new complete nodes (given level by level in increasing index order)."""
        ...


class MemoryNodeStore:
    """An in-memory `NodeStore`: one bytearray of concatenated 32-byte hashes per level.

    Nodes of a level are completed in index order, so each level is append-only; writing a node
    again with other bytes, or out of order, is refused rather than silently rewriting history.
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = []

    def get(self, level: int, index: int) -> bytes:
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]) // HASH_SIZE:
            offset = index * HASH_SIZE
            return bytes(self._levels[level][offset : offset + HASH_SIZE])
        raise KeyError((level, index))

    def put_many(self, nodes: Mapping[NodeId, bytes]) -> None:
        for (level, index), value in nodes.items():
            if len(value) != HASH_SIZE:
                raise ValueError(f"node ({level}, {index}) is not a {HASH_SIZE}-byte hash")
            while len(self._levels) <= level:
                self._levels.append(bytearray())
            stored = len(self._levels[level]) // HASH_SIZE
            if index == stored:
                self._levels[level] += value
            elif index < stored:
                if self.get(level, index) != value:
                    raise ValueError(f"node ({level}, {index}) is already stored with another hash")
            else:
                raise ValueError(f"node ({level}, {index}) written before node ({level}, {stored})")

    def node_count(self) -> int:
        """How many nodes are stored (about twice the number of leaves)."""
        return sum(len(level) // HASH_SIZE for level in self._levels)


def _check_size(size: int, what: str = "tree size") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"{what} {size!r} is not an integer from 0 to 2^64-1")


def compact_range(begin: int, end: int) -> list[NodeId]:
    """The fewest complete nodes that exactly cover leaves [begin, end), left to right."""
    if not 0 <= begin <= end:
        raise ValueError(f"[{begin}, {end}) is not a range of leaves")
    nodes = []
    while begin < end:
        # The largest perfect subtree that starts at `begin` (aligned to its size) and fits.
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def _largest_power_of_two_below(n: int) -> int:
    """RFC 9162's k for n > 1: the largest power of two smaller than n."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass(frozen=True)
class ProofPlan:
    """Which stored nodes a proof (or root) needs, and how they combine.

    Each part is one hash of the result: a single stored node, or the nodes of an incomplete
    subtree's compact range, left to right, whose hash is folded right to left (RFC 9162's MTH
    splits at the largest power of two, so the left child is always complete).
    """

    parts: tuple[tuple[NodeId, ...], ...]

    @property
    def node_ids(self) -> list[NodeId]:
        """Every node to read, in the order `assemble` takes their hashes."""
        return [node for part in self.parts for node in part]

    def assemble(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Build the result from the hashes of `node_ids`, in that order."""
        if len(hashes) != sum(len(part) for part in self.parts):
            raise ValueError("one hash is needed per node of the plan")
        result = []
        position = 0
        for part in self.parts:
            chunk = hashes[position : position + len(part)]
            position += len(part)
            value = chunk[-1]
            for left in reversed(chunk[:-1]):
                value = node_hash(left, value)
            result.append(value)
        return result

    def fetch(self, reader: NodeReader) -> list[bytes]:
        """Read the plan's nodes from `reader` one by one and build the result."""
        return self.assemble([reader.get(level, index) for level, index in self.node_ids])


def root_plan(size: int) -> ProofPlan:
    """The stored nodes whose fold is the root of the tree of `size` (no parts for the empty tree)."""
    _check_size(size)
    return ProofPlan((tuple(compact_range(0, size)),) if size else ())


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """The nodes of the inclusion proof PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf level first."""
    _check_size(size)
    _check_size(index, "leaf index")
    if index >= size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    parts: list[tuple[NodeId, ...]] = []
    start, n = 0, size
    while n > 1:
        k = _largest_power_of_two_below(n)
        if index - start < k:
            # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            parts.append(tuple(compact_range(start + k, start + n)))
            n = k
        else:
            # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            parts.append(tuple(compact_range(start, start + k)))
            start, n = start + k, n - k
    parts.reverse()
    return ProofPlan(tuple(parts))


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """The nodes of the consistency proof PROOF(size1, D[size2]) of RFC 9162 §2.1.4.1.

    Requires 0 < size1 <= size2 (a proof from the empty tree is meaningless; equal sizes give an
    empty proof).
    """
    _check_size(size1)
    _check_size(size2)
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2} (needs 0 < first <= second)")
    parts: list[tuple[NodeId, ...]] = []
    m, start, n, whole = size1, 0, size2, True
    # SUBPROOF(m, D[n], b), unrolled; `whole` is b: D[0:m] is the tree the verifier already has.
    while m != n:
        k = _largest_power_of_two_below(n)
        if m <= k:
            # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            parts.append(tuple(compact_range(start + k, start + n)))
            n = k
        else:
            # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            parts.append(tuple(compact_range(start, start + k)))
            m, start, n, whole = m - k, start + k, n - k, False
    if not whole:
        parts.append(tuple(compact_range(start, start + n)))
    parts.reverse()
    return ProofPlan(tuple(parts))


def root(reader: NodeReader, size: int) -> bytes:
    """The root of the tree of `size` (this or any earlier size) from its stored compact range."""
    plan = root_plan(size)
    return plan.fetch(reader)[0] if plan.parts else EMPTY_ROOT


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `index` in the tree of `size`, from stored nodes."""
    return inclusion_plan(index, size).fetch(reader)


def consistency_proof(reader: NodeReader, size1: int, size2: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of `size1` to the tree of `size2`, from stored nodes."""
    return consistency_plan(size1, size2).fetch(reader)


def append_nodes(reader: NodeReader, size: int, leaf_hashes: Iterable[bytes]) -> dict[NodeId, bytes]:
    """The new complete nodes after appending `leaf_hashes` to the tree of `size`, in write order.

    Reads only the compact range of the current tree (at most log2(size) nodes); returns each new
    leaf and every node it completes, level by level in increasing index order, for the caller to
    store (in the same transaction as the new tree size).
    """
    _check_size(size)
    stack: list[tuple[int, bytes]] = [(level, reader.get(level, index)) for level, index in compact_range(0, size)]
    new: dict[NodeId, bytes] = {}
    count = size
    for value in leaf_hashes:
        if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
            raise ValueError(f"leaf hash {count} is not a {HASH_SIZE}-byte hash")
        new[(0, count)] = bytes(value)
        count += 1
        stack.append((0, bytes(value)))
        # Two equal-level subtrees at the top of the stack are siblings: their parent just completed.
        while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
            level, right = stack.pop()
            _, left = stack.pop()
            parent = node_hash(left, right)
            new[(level + 1, (count >> (level + 1)) - 1)] = parent
            stack.append((level + 1, parent))
    _check_size(count)
    return new


def append(store: NodeStore, size: int, leaf_hashes: Iterable[bytes]) -> int:
    """Append `leaf_hashes` to the tree of `size` held in `store`; returns the new size."""
    nodes = append_nodes(store, size, leaf_hashes)
    store.put_many(nodes)
    return size + sum(1 for level, _ in nodes if level == 0)


class MerkleTree:
    """A growing tree over a `NodeStore` that knows its size: for tests, benchmarks and one-process use.

    The service keeps its size next to the nodes in the database instead, and calls the functions
    above in the integrator's transaction.
    """

    def __init__(self, store: NodeStore | None = None, size: int = 0) -> None:
        _check_size(size)
        self.store: NodeStore = store if store is not None else MemoryNodeStore()
        self.size = size

    def append(self, leaf_hashes: Iterable[bytes]) -> int:
        """Append leaf hashes; returns the new size."""
        self.size = append(self.store, self.size, leaf_hashes)
        return self.size

    def _at(self, size: int | None) -> int:
        size = self.size if size is None else size
        _check_size(size)
        if size > self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root now, or at an earlier size."""
        return root(self.store, self._at(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.store, index, self._at(size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(self.store, size1, self._at(size2))
