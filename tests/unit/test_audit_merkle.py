"""RFC 9162 Merkle tree of the audit log: reference vectors, generated proofs, corruptions, the node store."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from referral_service.audit.merkle import (
    EMPTY_ROOT,
    MemoryNodeStore,
    MerkleTree,
    NodeId,
    ProofError,
    append,
    append_nodes,
    compact_range,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def shared_dir() -> Path | None:
    """The project's shared/ folder: next to the repository, else $REFERRAL_SHARED_DIR."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo.parent / "shared"]
    if os.environ.get("REFERRAL_SHARED_DIR"):
        candidates.append(Path(os.environ["REFERRAL_SHARED_DIR"]))
    return next((c for c in candidates if (c / "testdata" / "merkle").is_dir()), None)


SHARED = shared_dir()
VECTORS = SHARED / "testdata" / "merkle" if SHARED else None
MISSING = "../shared/testdata/merkle not found next to the repository (set REFERRAL_SHARED_DIR)"


def require_vectors() -> Path:
    # In CI the checkout sits next to a copy of shared/: a missing folder is a broken set-up, not a skip.
    if VECTORS is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return VECTORS


def vector_cases(kind: str) -> list[Any]:
    if VECTORS is None:
        return [pytest.param(None, id="vectors-missing")]
    folder = VECTORS / kind
    return [pytest.param(path, id=str(path.relative_to(folder))) for path in sorted(folder.rglob("*.json"))]


def load(path: Path | None) -> dict[str, Any]:
    require_vectors()
    assert path is not None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def b64(value: str) -> bytes:
    return base64.b64decode(value)


def hashes(values: list[str] | None) -> list[bytes]:
    return [b64(v) for v in values or []]


# RFC 6962's reference leaves and the roots of their trees of size 0 to 8, as in
# transparency-dev/merkle's testonly/constants.go (the trees the shared vectors were made from).
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def reference_tree() -> MerkleTree:
    tree = MerkleTree()
    tree.append(leaf_hash(leaf) for leaf in REFERENCE_LEAVES)
    return tree


# -- the 196 cases of transparency-dev/merkle ------------------------------------------------------


def test_all_196_reference_cases_are_present() -> None:
    folder = require_vectors()
    inclusion = list((folder / "inclusion").rglob("*.json"))
    consistency = list((folder / "consistency").rglob("*.json"))
    assert (len(inclusion), len(consistency)) == (98, 98)


@pytest.mark.parametrize("path", vector_cases("inclusion"))
def test_inclusion_verifier_agrees_with_the_reference_case(path: Path | None) -> None:
    case = load(path)
    args = (case["leafIdx"], case["treeSize"], b64(case["leafHash"]), hashes(case["proof"]), b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", vector_cases("consistency"))
def test_consistency_verifier_agrees_with_the_reference_case(path: Path | None) -> None:
    case = load(path)
    args = (case["size1"], case["size2"], hashes(case["proof"]), b64(case["root1"]), b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_generated_proofs_are_byte_for_byte_the_reference_happy_paths() -> None:
    folder = require_vectors()
    tree = reference_tree()
    checked = 0
    for path in sorted(folder.rglob("happy-path.json")):
        case = json.loads(path.read_text())
        if "leafIdx" in case:
            assert case["leafHash"] == base64.b64encode(leaf_hash(REFERENCE_LEAVES[case["leafIdx"]])).decode()
            assert tree.inclusion_proof(case["leafIdx"], case["treeSize"]) == hashes(case["proof"])
            assert tree.root(case["treeSize"]) == b64(case["root"])
        else:
            assert tree.consistency_proof(case["size1"], case["size2"]) == hashes(case["proof"])
            assert (tree.root(case["size1"]), tree.root(case["size2"])) == (b64(case["root1"]), b64(case["root2"]))
        checked += 1
    assert checked == 10


def test_roots_of_the_rfc6962_reference_leaves_at_every_size() -> None:
    tree = reference_tree()
    for size, expected in enumerate(REFERENCE_ROOTS):
        assert root_from_leaf_hashes(leaf_hash(leaf) for leaf in REFERENCE_LEAVES[:size]) == expected
        assert tree.root(size) == expected
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == REFERENCE_ROOTS[0]


def test_leaves_and_nodes_are_hashed_in_separate_domains() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert left == hashlib.sha256(b"\x00a").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # A leaf whose data is two hashes is not the node over them: no second-preimage across levels.
    assert leaf_hash(left + right) != node_hash(left, right)


# -- generated proofs up to size 64 ------------------------------------------------------------------

MAX_SIZE = 64


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    rng = random.Random(9162)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(MAX_SIZE + 1)]


@pytest.fixture(scope="module")
def tree(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    rng = random.Random(1)
    done = 0
    while done < len(leaves):
        step = rng.randrange(1, 9)
        tree.append(leaves[done : done + step])
        done = min(done + step, len(leaves))
    return tree


@pytest.fixture(scope="module")
def roots(leaves: list[bytes]) -> list[bytes]:
    """From-scratch roots of every size, independent of the node store."""
    return [root_from_leaf_hashes(leaves[:size]) for size in range(MAX_SIZE + 2)]


def all_inclusion_cases() -> Iterator[tuple[int, int]]:
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            yield index, size


def all_consistency_cases() -> Iterator[tuple[int, int]]:
    for size2 in range(1, MAX_SIZE + 1):
        for size1 in range(1, size2 + 1):
            yield size1, size2


def test_every_inclusion_proof_up_to_size_64_verifies_against_the_from_scratch_root(
    tree: MerkleTree, leaves: list[bytes], roots: list[bytes]
) -> None:
    count = 0
    for index, size in all_inclusion_cases():
        proof = tree.inclusion_proof(index, size)
        verify_inclusion(index, size, leaves[index], proof, roots[size])
        assert root_from_inclusion_proof(index, size, leaves[index], proof) == roots[size]
        count += 1
    assert count == MAX_SIZE * (MAX_SIZE + 1) // 2


def test_every_consistency_proof_up_to_size_64_verifies_against_the_from_scratch_roots(
    tree: MerkleTree, roots: list[bytes]
) -> None:
    count = 0
    for size1, size2 in all_consistency_cases():
        proof = tree.consistency_proof(size1, size2)
        verify_consistency(size1, size2, proof, roots[size1], roots[size2])
        assert root_from_consistency_proof(size1, size2, proof, roots[size1]) == roots[size2]
        assert (proof == []) == (size1 == size2)
        count += 1
    assert count == MAX_SIZE * (MAX_SIZE + 1) // 2


# -- corrupted proofs ------------------------------------------------------------------------------


def flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def corruptions(proof: list[bytes], rng: random.Random) -> Iterator[tuple[str, list[bytes]]]:
    """Every structural corruption of a proof, and a bit flip in each of its hashes."""
    for i in range(len(proof)):
        yield f"flip a bit of hash {i}", [*proof[:i], flip(proof[i], rng.randrange(256)), *proof[i + 1 :]]
        yield f"drop hash {i}", proof[:i] + proof[i + 1 :]
    for i in range(len(proof) + 1):
        yield f"add a hash at {i}", [*proof[:i], leaf_hash(rng.randbytes(8)), *proof[i:]]
        if proof:
            yield f"repeat a hash at {i}", [*proof[:i], proof[min(i, len(proof) - 1)], *proof[i:]]
    for i in range(len(proof)):
        for j in range(i + 1, len(proof)):
            if proof[i] != proof[j]:
                swapped = list(proof)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                yield f"swap hashes {i} and {j}", swapped
    yield "truncate a hash", [*proof[:-1], proof[-1][:-1]] if proof else [b""]


def rejected(check: Callable[..., None], *args: Any) -> bool:
    try:
        check(*args)
    except ProofError:
        return True
    return False


def test_every_corruption_of_an_inclusion_proof_is_rejected(
    tree: MerkleTree, leaves: list[bytes], roots: list[bytes]
) -> None:
    rng = random.Random(6962)
    accepted = []
    for index, size in all_inclusion_cases():
        proof = tree.inclusion_proof(index, size)
        leaf = leaves[index]
        for what, bad in corruptions(proof, rng):
            if not rejected(verify_inclusion, index, size, leaf, bad, roots[size]):
                accepted.append((index, size, what))
        # The entry claimed at another index, or in another signed tree head of the same log.
        for other in range(size + 2):
            if other != index and not rejected(verify_inclusion, other, size, leaf, proof, roots[size]):
                accepted.append((index, size, f"index {other}"))
        for other in range(index + 1, MAX_SIZE + 2):
            if other != size and not rejected(verify_inclusion, index, other, leaf, proof, roots[other]):
                accepted.append((index, size, f"size {other}"))
        for wrong_root in (roots[size - 1], flip(roots[size], 0), EMPTY_ROOT, b""):
            if not rejected(verify_inclusion, index, size, leaf, proof, wrong_root):
                accepted.append((index, size, "wrong root"))
        if not rejected(verify_inclusion, index, size, flip(leaf, 7), proof, roots[size]):
            accepted.append((index, size, "wrong leaf"))
    assert accepted == []


def test_every_corruption_of_a_consistency_proof_is_rejected(tree: MerkleTree, roots: list[bytes]) -> None:
    rng = random.Random(9162)
    accepted = []
    for size1, size2 in all_consistency_cases():
        proof = tree.consistency_proof(size1, size2)
        r1, r2 = roots[size1], roots[size2]
        for what, bad in corruptions(proof, rng):
            if not rejected(verify_consistency, size1, size2, bad, r1, r2):
                accepted.append((size1, size2, what))
        for other in range(0, MAX_SIZE + 2):
            if other != size1 and not rejected(verify_consistency, other, size2, proof, roots[other], r2):
                accepted.append((size1, size2, f"first size {other}"))
            if other != size2 and not rejected(verify_consistency, size1, other, proof, r1, roots[other]):
                accepted.append((size1, size2, f"second size {other}"))
        if size1 != size2 and not rejected(verify_consistency, size1, size2, proof, r2, r1):
            accepted.append((size1, size2, "swapped roots"))
        for wrong in (flip(r1, 3), EMPTY_ROOT):
            if not rejected(verify_consistency, size1, size2, proof, wrong, r2):
                accepted.append((size1, size2, "wrong first root"))
            if not rejected(verify_consistency, size1, size2, proof, r1, wrong):
                accepted.append((size1, size2, "wrong second root"))
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 64), (37, 64), (62, 63), (5, 6), (32, 33)])
def test_flipping_any_bit_of_any_hash_of_an_inclusion_proof_is_rejected(
    tree: MerkleTree, leaves: list[bytes], roots: list[bytes], index: int, size: int
) -> None:
    proof = tree.inclusion_proof(index, size)
    for i in range(len(proof)):
        for bit in range(256):
            bad = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
            assert rejected(verify_inclusion, index, size, leaves[index], bad, roots[size])
    for bit in range(256):
        assert rejected(verify_inclusion, index, size, flip(leaves[index], bit), proof, roots[size])


@pytest.mark.parametrize(("size1", "size2"), [(1, 64), (37, 64), (32, 64), (63, 64), (6, 8), (5, 33)])
def test_flipping_any_bit_of_any_hash_of_a_consistency_proof_is_rejected(
    tree: MerkleTree, roots: list[bytes], size1: int, size2: int
) -> None:
    proof = tree.consistency_proof(size1, size2)
    for i in range(len(proof)):
        for bit in range(256):
            bad = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
            assert rejected(verify_consistency, size1, size2, bad, roots[size1], roots[size2])


# -- the node store ------------------------------------------------------------------------------


class CountingReader:
    """A node reader that counts reads, to show what proofs and appends cost."""

    def __init__(self, store: MemoryNodeStore) -> None:
        self.store = store
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.store.get(level, index)


def subtree_hash(leaves: list[bytes], level: int, index: int) -> bytes:
    return root_from_leaf_hashes(leaves[index << level : (index + 1) << level])


@pytest.mark.parametrize("seed", range(5))
def test_appending_in_random_batches_gives_the_from_scratch_roots(seed: int) -> None:
    rng = random.Random(seed)
    leaves = [leaf_hash(rng.randbytes(16)) for _ in range(700)]
    store = MemoryNodeStore()
    size = 0
    while size < len(leaves):
        batch = leaves[size : size + rng.choice([0, 1, 1, 2, 3, 7, 16, 31, 64, 100])]
        size = append(store, size, batch)
        assert root(store, size) == root_from_leaf_hashes(leaves[:size])
    # Every stored node is the hash of its complete subtree, and nothing else is stored.
    assert store.node_count() == 2 * size - bin(size).count("1")
    for level in range(size.bit_length()):
        for index in range(size >> level):
            assert store.get(level, index) == subtree_hash(leaves, level, index)
        with pytest.raises(KeyError):
            store.get(level, size >> level)


def test_roots_of_every_earlier_size_from_the_store_equal_the_from_scratch_roots() -> None:
    rng = random.Random(7)
    leaves = [leaf_hash(rng.randbytes(16)) for _ in range(300)]
    tree = MerkleTree()
    for start in range(0, 300, 37):
        tree.append(leaves[start : start + 37])
    assert tree.size == 300
    for size in range(301):
        assert tree.root(size) == root_from_leaf_hashes(leaves[:size])


def test_appending_reads_only_the_compact_range_of_the_current_tree() -> None:
    store = MemoryNodeStore()
    size = append(store, 0, [leaf_hash(bytes([i % 256, i // 256])) for i in range(1000)])
    for batch in (1, 10, 500):
        reader = CountingReader(store)
        nodes = append_nodes(reader, size, [leaf_hash(b"new %d" % i) for i in range(batch)])
        assert reader.reads == bin(size).count("1")
        # Each new leaf and each node it completes, and nothing already stored.
        assert sum(1 for level, _ in nodes if level == 0) == batch
        assert len(nodes) == 2 * (size + batch) - bin(size + batch).count("1") - store.node_count()
        store.put_many(nodes)
        size += batch


def test_proofs_and_roots_read_a_logarithmic_number_of_stored_nodes() -> None:
    store = MemoryNodeStore()
    size = append(store, 0, (leaf_hash(i.to_bytes(4, "big")) for i in range(5000)))
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randrange(1, size + 1)
        m = rng.randrange(1, n + 1)
        bound = 2 * n.bit_length()
        reader = CountingReader(store)
        inclusion_proof(reader, rng.randrange(n), n)
        consistency_proof(reader, m, n)
        root(reader, n)
        assert reader.reads <= 3 * bound


def test_a_plan_fetched_in_one_batch_gives_the_same_proof() -> None:
    tree = MerkleTree()
    tree.append(leaf_hash(bytes([i])) for i in range(100))
    for plan, expected in (
        (inclusion_plan(41, 99), tree.inclusion_proof(41, 99)),
        (consistency_plan(13, 100), tree.consistency_proof(13, 100)),
    ):
        fetched = [tree.store.get(level, index) for level, index in plan.node_ids]
        assert plan.assemble(fetched) == expected
        with pytest.raises(ValueError, match="one hash"):
            plan.assemble(fetched[:-1])


def test_compact_ranges_cover_exactly_with_aligned_perfect_subtrees() -> None:
    for begin in range(40):
        for end in range(begin, 80):
            nodes: list[NodeId] = compact_range(begin, end)
            covered = [leaf for level, index in nodes for leaf in range(index << level, (index + 1) << level)]
            assert covered == list(range(begin, end))
    assert compact_range(0, 6) == [(2, 0), (1, 2)]


def test_the_store_refuses_to_rewrite_or_skip_a_node() -> None:
    store = MemoryNodeStore()
    size = append(store, 0, [leaf_hash(b"a"), leaf_hash(b"b")])
    store.put_many({(0, 1): leaf_hash(b"b")})  # the same hash again is harmless
    with pytest.raises(ValueError, match="already stored"):
        store.put_many({(0, 1): leaf_hash(b"evil")})
    with pytest.raises(ValueError, match="written before"):
        store.put_many({(0, 5): leaf_hash(b"gap")})
    with pytest.raises(ValueError, match="32-byte"):
        store.put_many({(0, 2): b"short"})
    assert root(store, size) == node_hash(leaf_hash(b"a"), leaf_hash(b"b"))


def test_requests_outside_the_tree_are_refused() -> None:
    tree = MerkleTree()
    tree.append([leaf_hash(b"x")] * 5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 6)
    with pytest.raises(ValueError):
        tree.consistency_proof(0, 5)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)
    with pytest.raises(ValueError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.append([b"not a hash"])
    # Free functions over a store that is smaller than asked: the missing node is named.
    with pytest.raises(KeyError):
        inclusion_proof(tree.store, 0, 6)
    with pytest.raises(ValueError):
        inclusion_plan(-1, 5)
    assert tree.size == 5


def test_proofs_with_hashes_of_the_wrong_length_or_sizes_out_of_range_are_rejected_as_such() -> None:
    tree = MerkleTree()
    tree.append(leaf_hash(bytes([i])) for i in range(8))
    proof, r = tree.inclusion_proof(3, 8), tree.root()
    for bad in (proof[0][:31], proof[0] + b"\x00", b""):
        with pytest.raises(ProofError, match="proof hash is not a 32-byte"):
            verify_inclusion(3, 8, leaf_hash(bytes([3])), [bad, *proof[1:]], r)
        with pytest.raises(ProofError, match="proof hash is not a 32-byte"):
            verify_consistency(3, 8, [bad, *tree.consistency_proof(3, 8)[1:]], tree.root(3), r)
    for size in (-1, 2**64, True):
        with pytest.raises(ProofError, match="tree size"):
            verify_inclusion(0, size, leaf_hash(b"\x00"), proof, r)
        with pytest.raises(ProofError, match="tree size"):
            verify_consistency(size, 8, [], r, r)
