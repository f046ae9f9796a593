"""Groups of files holding the same picture: identical bytes, or perceptual hashes a few bits apart.

Pure functions on hashes, shared by the audit (which reports the groups) and the validation split (which keeps
each group on one side). `fingerprints.py` reads the hashes from the files.

>>> duplicate_groups(["a1", "b2", "a1", "c3"], [0b1111, 0b0111, 0b1111, 2**63], near_threshold=1)
[[0, 1, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HASH_BITS = 64
"""The bits of a perceptual hash (pHash, 8 × 8)."""
NEAR_THRESHOLD = 6
"""The most pHash bits two near-identical pictures differ in: resized, recompressed, grey or contrast-changed
copies differ by 0-2, brightened ones by up to 6; different photos of similar scenes start around 8. The audit's
default `--near-threshold` is the same number, kept in `audit/options.py` so that `imgclf --help` needs no numpy
(`tests/data/test_groups.py` checks that the two agree)."""
_BANDED_FROM = 4096  # fewer hashes are compared pair by pair: 0.05 s for 2,500, faster than the bands


def hamming_pairs(hashes: np.ndarray, threshold: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j, sorted, of the pairs of 64-bit hashes that differ in at most `threshold` bits.

    Many hashes are cut into `threshold + 1` bands: two hashes that close agree on at least one band whole
    (pigeonhole), so only hashes sharing a band's value are compared. With random-looking hashes that finds the
    pairs of 30,000 in 0.3 s where comparing every pair takes 5.5 s (on two busy cores); below
    `_BANDED_FROM` hashes, or with bands under 8 bits, every pair is compared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    width = HASH_BITS // (threshold + 1)
    if len(hashes) < _BANDED_FROM or width < 8:
        return _all_pairs(hashes, threshold, chunk)
    codes = [np.empty(0, dtype=np.int64)]  # i * count + j, so that a pair found in two bands counts once
    for band in range(threshold + 1):
        bits = width if band < threshold else HASH_BITS - band * width  # the last band takes the rest
        keys = (hashes >> np.uint64(band * width)) & np.uint64((1 << bits) - 1)
        order = np.argsort(keys, kind="stable")  # stable: each bucket lists its indices in increasing order
        _, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
        for start, count in zip(starts[counts > 1].tolist(), counts[counts > 1].tolist()):
            members = order[start : start + count]
            firsts, seconds = _all_pairs(hashes[members], threshold, chunk)
            codes.append(members[firsts] * len(hashes) + members[seconds])
    pairs = np.unique(np.concatenate(codes))
    return pairs // len(hashes), pairs % len(hashes)


def _all_pairs(hashes: np.ndarray, threshold: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """`hamming_pairs` by comparing every pair with numpy's popcount, `chunk` rows at a time (memory: chunk × N)."""
    firsts, seconds = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        rows, columns = np.nonzero(np.bitwise_count(block[:, None] ^ hashes[None, start:]) <= threshold)
        keep = columns > rows  # both offsets are `start`, so this keeps j > i: each pair once, no self-pairs
        firsts.append(rows[keep] + start)
        seconds.append(columns[keep] + start)
    return np.concatenate(firsts), np.concatenate(seconds)


def connected_groups(count: int, firsts: np.ndarray, seconds: np.ndarray) -> list[np.ndarray]:
    """The connected components of `count` items joined by the pairs (firsts[k], seconds[k]); singletons left out.

    Each component lists its items in increasing order; components come in the order of their first item.
    """
    # Imported here: scipy.sparse takes half a second to import, which every `imgclf` command would pay.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(firsts), dtype=np.int8), (firsts, seconds)), shape=(count, count))
    _, component_of = connected_components(graph, directed=False)
    order = np.argsort(component_of, kind="stable")
    starts = np.flatnonzero(np.diff(component_of[order], prepend=-1))
    return [members for members in np.split(order, starts[1:]) if len(members) > 1]


def duplicate_groups(
    content_hashes: Sequence[str | None],
    perceptual_hashes: Sequence[int | None],
    near_threshold: int = NEAR_THRESHOLD,
) -> list[list[int]]:
    """The indices of files that hold the same picture, in groups of two or more, each sorted, first index first.

    Files join when their content hashes are equal (identical bytes) or their perceptual hashes differ in at most
    `near_threshold` bits. A file without a perceptual hash (not an image) joins only its identical copies, and
    one without a content hash (not readable) joins nothing.
    """
    first_of_content: dict[str, int] = {}
    firsts, seconds = [], []
    for index, content_hash in enumerate(content_hashes):
        if content_hash is None:
            continue
        first = first_of_content.setdefault(content_hash, index)
        if first != index:
            firsts.append(first)
            seconds.append(index)
    hashed = np.array([i for i in first_of_content.values() if perceptual_hashes[i] is not None], dtype=np.int64)
    near_firsts, near_seconds = hamming_pairs(
        np.array([perceptual_hashes[i] for i in hashed], np.uint64), near_threshold
    )
    firsts.extend(hashed[near_firsts].tolist())
    seconds.extend(hashed[near_seconds].tolist())
    pairs = np.array(firsts, dtype=np.int64), np.array(seconds, dtype=np.int64)
    return [members.tolist() for members in connected_groups(len(content_hashes), *pairs)]
