"""What the audit log's Merkle tree costs in pure Python, without a database.

    .venv/bin/python bench/audit_merkle.py [--leaves 1000000] [--batch 1000] [--proofs 1000]

Appends the leaf hashes in batches to the in-memory node store (`MemoryNodeStore`, every complete
node kept, as the database-backed store will), then, at the final size, generates and verifies
inclusion proofs of random entries and consistency proofs from random earlier sizes, and finally
recomputes the root from all leaf hashes from scratch (what a full verify does after hashing
entries). Every proof is checked against the store's root, and the store's root against the
from-scratch one, so the figures are for correct work. This is the baseline for the integrator
(issue 10's goal is ≥ 1,500 entries/s including the database); SQL and commits come on top.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referral_service.audit.merkle import (  # noqa: E402
    MemoryNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--proofs", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    n, rng = args.leaves, random.Random(args.seed)

    print(f"Python {platform.python_version()} on {platform.machine()}, {n:,} leaves, batches of {args.batch:,}")

    started = time.perf_counter()
    leaves = [leaf_hash(b"audit entry %d" % i) for i in range(n)]
    hashing = time.perf_counter() - started
    print(f"leaf hashing (not part of append): {n / hashing:,.0f} leaves/s ({hashing:.2f} s)")

    store, size = MemoryNodeStore(), 0
    batch_times = []
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, n, args.batch):
        t = time.perf_counter()
        size = append(store, size, leaves[start : start + args.batch])
        batch_times.append(time.perf_counter() - t)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    batch_times.sort()
    print(
        f"append: {n / elapsed:,.0f} leaves/s ({elapsed:.2f} s wall, {cpu:.2f} s CPU); "
        f"per batch median {batch_times[len(batch_times) // 2] * 1e3:.2f} ms, max {batch_times[-1] * 1e3:.2f} ms; "
        f"{store.node_count():,} nodes stored ({store.node_count() * 32 / 2**20:.0f} MiB of hashes)"
    )

    started = time.perf_counter()
    head = root(store, size)
    print(f"root from the store at size {size:,}: {(time.perf_counter() - started) * 1e6:.0f} µs")

    indexes = [rng.randrange(size) for _ in range(args.proofs)]
    started = time.perf_counter()
    proofs = [inclusion_proof(store, i, size) for i in indexes]
    generated = time.perf_counter() - started
    started = time.perf_counter()
    for i, proof in zip(indexes, proofs, strict=True):
        verify_inclusion(i, size, leaves[i], proof, head)
    verified = time.perf_counter() - started
    print(
        f"{args.proofs:,} inclusion proofs at size {size:,}: generate {generated * 1e3:.1f} ms "
        f"({generated / args.proofs * 1e6:.1f} µs each), verify {verified * 1e3:.1f} ms "
        f"({verified / args.proofs * 1e6:.1f} µs each), {len(proofs[0])} hashes per proof"
    )

    firsts = [rng.randrange(1, size + 1) for _ in range(args.proofs)]
    started = time.perf_counter()
    earlier_roots = [root(store, m) for m in firsts]
    roots_time = time.perf_counter() - started
    started = time.perf_counter()
    proofs = [consistency_proof(store, m, size) for m in firsts]
    generated = time.perf_counter() - started
    started = time.perf_counter()
    for m, r1, proof in zip(firsts, earlier_roots, proofs, strict=True):
        verify_consistency(m, size, proof, r1, head)
    verified = time.perf_counter() - started
    print(
        f"{args.proofs:,} consistency proofs to size {size:,} from random sizes: generate {generated * 1e3:.1f} ms "
        f"({generated / args.proofs * 1e6:.1f} µs each), verify {verified * 1e3:.1f} ms "
        f"({verified / args.proofs * 1e6:.1f} µs each); the earlier roots from the store "
        f"{roots_time / args.proofs * 1e6:.1f} µs each"
    )

    started = time.perf_counter()
    scratch = root_from_leaf_hashes(leaves)
    elapsed = time.perf_counter() - started
    assert scratch == head, "the store's root is not the from-scratch root"
    print(
        f"root from scratch of all {n:,} leaf hashes: {elapsed:.2f} s ({n / elapsed:,.0f} leaves/s); "
        "equals the store's root"
    )


if __name__ == "__main__":
    main()
