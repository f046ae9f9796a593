"""Copies of one photo: Hamming pairs, duplicate groups, fingerprints of real photos and their on-disk cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from tests.conftest import CARS_PLANES

from imgclf.audit.inspection import inspect_file
from imgclf.audit.options import DEFAULT_NEAR_THRESHOLD, HASH_BITS
from imgclf.data import fingerprints as fingerprints_module
from imgclf.data import groups
from imgclf.data.fingerprints import cache_path, fingerprint, fingerprints, map_in_processes
from imgclf.data.groups import NEAR_THRESHOLD, duplicate_groups, hamming_pairs

PLANES = CARS_PLANES / "training_set" / "planes"


def test_the_split_and_the_audit_call_the_same_pictures_near():
    assert (NEAR_THRESHOLD, groups.HASH_BITS) == (DEFAULT_NEAR_THRESHOLD, HASH_BITS)


def test_hamming_pairs_match_a_direct_count():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=300, dtype=np.uint64)
    hashes[7] = hashes[3] ^ np.uint64(1 << 63 | 1)  # two bits apart, the top bit among them
    hashes[200] = hashes[3]
    firsts, seconds = hamming_pairs(hashes, threshold=2, chunk=64)
    assert sorted(zip(firsts.tolist(), seconds.tolist())) == [(3, 7), (3, 200), (7, 200)]


@pytest.mark.parametrize("threshold", [0, 3, 6, 7])
def test_hamming_pairs_by_bands_are_the_pairs_of_a_direct_count(threshold):
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**64, size=6000, dtype=np.uint64)
    # Near copies, flipping up to 9 bits, and a cluster that shares its low bits (one band's bucket holds 300).
    flips = [
        np.bitwise_or.reduce(np.uint64(1) << rng.choice(64, n, replace=False).astype(np.uint64)) for n in range(10)
    ]
    hashes[5000:5500] = hashes[:500] ^ np.array([flips[i % 10] for i in range(500)], dtype=np.uint64)
    hashes[5500:5800] = (hashes[5500:5800] & ~np.uint64(0xFFFF)) | np.uint64(0x1234)
    found = list(zip(*(pair.tolist() for pair in hamming_pairs(hashes, threshold))))
    expected = [
        (i, j)
        for i in range(len(hashes))
        for j in (i + 1 + np.flatnonzero(np.bitwise_count(hashes[i + 1 :] ^ hashes[i]) <= threshold)).tolist()
    ]
    assert found == expected and len(expected) >= 50  # at least the copies flipping no bit


def test_duplicate_groups_join_identical_bytes_and_near_hashes_through_chains():
    contents = ["a", "b", "a", "c", "d", "e", "f", None]
    hashes = [0b0, 0b1, 0b0, 0b11, 0b111111111 << 40, None, None, 0b0]
    # b is 1 bit from a, c 1 bit from b (2 from a): one chain; d is far; e has no pHash; f is unreadable.
    assert duplicate_groups(contents, hashes, near_threshold=1) == [[0, 1, 2, 3]]
    assert duplicate_groups(contents, hashes, near_threshold=0) == [[0, 2]]
    assert duplicate_groups(["x", "x", "y"], [None, None, None]) == [[0, 1]]


def test_duplicate_groups_of_nothing_is_nothing():
    assert duplicate_groups([], []) == []


def test_a_resized_recompressed_photo_is_near_and_a_copy_is_identical(tmp_path):
    original = PLANES / "airliner-570679__340.jpg"
    copy = shutil.copy(original, tmp_path / "copy.jpg")
    smaller = tmp_path / "smaller.jpg"
    with Image.open(original) as image:
        image.resize((image.width // 2, image.height // 2)).save(smaller, quality=70)
    (first_digest, first_hash), (copy_digest, copy_hash), (small_digest, small_hash) = [
        fingerprint(str(path)) for path in (original, copy, smaller)
    ]
    assert first_digest == copy_digest != small_digest and first_hash == copy_hash
    assert bin(first_hash ^ small_hash).count("1") <= NEAR_THRESHOLD
    assert inspect_file(original).perceptual_hash == first_hash  # the audit hashes the same way


def test_unreadable_files_and_non_images_get_no_perceptual_hash(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    assert fingerprint(str(tmp_path / "missing.jpg")) == (None, None)
    digest, phash = fingerprint(str(tmp_path / "notes.jpg"))
    assert len(digest) == 64 and phash is None


def test_fingerprints_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    photos = sorted(PLANES.iterdir())[:40]
    first = fingerprints([str(path) for path in photos], workers=2)
    assert cache_path().is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(fingerprints_module, "open_image_bytes", no_decoding)
    assert fingerprints([str(path) for path in photos]) == first
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(photos[0].read_bytes() + b"\0")  # other bytes: not in the cache
    with pytest.raises(AssertionError, match="decoded although cached"):
        fingerprints([str(edited)])


def test_a_damaged_cache_is_ignored_and_written_again():
    photos = [str(path) for path in sorted(PLANES.iterdir())[:3]]
    first = fingerprints(photos)
    cache_path().write_bytes(cache_path().read_bytes()[:-1] + b"\xff")
    assert fingerprints(photos) == first
    assert fingerprints_module.read_cache(cache_path())  # rewritten whole


def test_map_in_processes_keeps_the_order():
    assert list(map_in_processes(abs, list(range(-50, 0)), workers=2)) == list(range(50, 0, -1))
