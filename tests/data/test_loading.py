"""Decoding a dataset: in-memory and streaming batches, epochs and their order, unreadable files skipped."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tests.conftest import CARS_PLANES, write_image

from imgclf.config import Preprocessing
from imgclf.data.decoded_cache import DecodedCache
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor
from imgclf.data.loading import (
    BatchSource,
    StreamingImages,
    decode_files,
    decode_images,
    epoch_batches,
    load_or_skip,
    sequential_batches,
)

TRAINING_SET = CARS_PLANES / "training_set"
SMALL = Preprocessing(image_size=16)


def write_noise_images(folder: Path, count: int, seed: int) -> None:
    """PNGs of random pixels, so every sample is different and decoding is lossless."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def write_bad_files(folder: Path) -> dict[str, str]:
    """A zero-byte file, a truncated JPEG and a text file named .jpg; returns file name → expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    data = (TRAINING_SET / "cars" / "audi-1151768__340.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not a photo\n")
    return {"empty.jpg": "empty", "truncated.jpg": "truncated", "notes.jpg": "not an image"}


def test_decode_images_keeps_good_images_and_lists_bad_ones_with_reasons(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cars" / "red.png", (255, 0, 0))
    write_image(root / "cars" / "zz-blue.png", (0, 0, 255))
    reasons = write_bad_files(root / "cars")
    write_image(root / "planes" / "green.png", (0, 255, 0))
    index = index_folder(root)
    assert len(index.files) == 6
    calls = []

    decoded = decode_images(index, SMALL, workers=2, on_image=lambda: calls.append(1))

    assert decoded.images.dtype == torch.uint8
    assert decoded.images.shape == (3, 3, 16, 16)
    assert [Path(f).name for f in decoded.files] == ["red.png", "zz-blue.png", "green.png"]
    assert decoded.labels.tolist() == [0, 0, 1]
    assert decoded.images[:, :, 8, 8].tolist() == [[255, 0, 0], [0, 0, 255], [0, 255, 0]]
    assert {Path(s.path).name: s.reason for s in decoded.skipped}.keys() == reasons.keys()
    for skipped in decoded.skipped:
        assert reasons[Path(skipped.path).name] in skipped.reason
    assert len(calls) == 6  # progress is reported for bad files too


def test_decode_files_matches_decoding_each_file_alone_with_unreadable_files_mixed_in(tmp_path):
    write_noise_images(tmp_path / "good", 6, seed=0)
    write_bad_files(tmp_path / "bad")
    good, bad = sorted((tmp_path / "good").iterdir()), sorted((tmp_path / "bad").iterdir())
    # Unreadable files first, between and last, so readable rows move down by different amounts.
    files = [str(path) for path in [bad[0], *good[:2], bad[1], tmp_path / "gone.png", *good[2:], bad[2]]]
    readable = [i for i, path in enumerate(files) if Path(path).parent.name == "good"]
    expected_skipped = [(path, load_or_skip(path, SMALL).reason) for i, path in enumerate(files) if i not in readable]

    # Without a cache, filling one, then reading it: the same answer each time.
    for cache, hits in ((None, 0), (DecodedCache(SMALL), 0), (DecodedCache(SMALL), len(readable))):
        images, kept, skipped, cache_hits = decode_files(files, SMALL, workers=3, cache=cache)
        assert kept == readable
        assert images.shape == (len(readable), 3, 16, 16) and images.dtype == torch.uint8
        for row, i in enumerate(kept):
            assert torch.equal(images[row], load_tensor(files[i], SMALL)), files[i]
        assert [(s.path, s.reason) for s in skipped] == expected_skipped
        assert cache_hits == hits

    images, kept, skipped, _ = decode_files(files[:1], SMALL)
    assert (images.shape, kept, len(skipped)) == ((0, 3, 16, 16), [], 1)


def test_one_epoch_covers_every_image_once_with_a_smaller_last_batch():
    batches = epoch_batches(150, 32, steps=None, seed=0, epoch=0)
    assert [len(b) for b in batches] == [32, 32, 32, 32, 22]
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(150))
    assert flat != list(range(150))  # shuffled


def test_steps_per_epoch_reuses_images_evenly():
    batches = epoch_batches(160, 32, steps=30, seed=0, epoch=0)
    assert len(batches) == 30
    assert all(len(batch) == 32 for batch in batches)
    flat = [i for batch in batches for i in batch]
    assert Counter(flat) == {i: 6 for i in range(160)}
    assert flat[:160] != list(range(160))  # shuffled
    assert flat[:160] != flat[160:320]  # each pass shuffled afresh


def test_epoch_batches_depend_on_seed_and_epoch_alone():
    assert epoch_batches(160, 32, 30, seed=1, epoch=2) == epoch_batches(160, 32, 30, seed=1, epoch=2)
    assert epoch_batches(160, 32, None, seed=1, epoch=2) != epoch_batches(160, 32, None, seed=1, epoch=3)
    assert epoch_batches(160, 32, None, seed=1, epoch=2) != epoch_batches(160, 32, None, seed=2, epoch=2)


def test_sequential_batches_cover_every_image_in_order():
    assert sequential_batches(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def collect(source: BatchSource, plan: list[list[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    images, labels = [], []
    for batch_images, batch_labels in source.batches(plan):
        images.append(batch_images)
        labels.append(batch_labels)
    return images, labels


def test_in_memory_and_streaming_yield_the_same_samples():
    everything = index_folder(TRAINING_SET)
    index = everything.subset(list(range(0, 160, 8)))  # 10 cars and 10 planes, the large photos included
    index.files.append(str(TRAINING_SET / "planes" / "netherlands 3.JPG"))
    index.labels.append(1)
    plan = epoch_batches(len(index.files), 6, steps=None, seed=0, epoch=0)

    in_memory = collect(BatchSource(index, SMALL, in_memory=True, workers=0), plan)
    streamed = collect(BatchSource(index, SMALL, in_memory=False, workers=0), plan)

    for source in (in_memory, streamed):
        images, labels = source
        assert [len(batch) for batch in images] == [len(batch) for batch in plan]
        for batch, batch_images, batch_labels in zip(plan, images, labels, strict=True):
            assert batch_images.dtype == torch.uint8
            assert batch_labels.tolist() == [index.labels[i] for i in batch]
            for i, image in zip(batch, batch_images, strict=True):
                assert torch.equal(image, load_tensor(index.files[i], SMALL))


def test_streaming_with_worker_processes_matches_in_memory(tmp_path):
    write_noise_images(tmp_path / "data" / "a", 7, seed=0)
    write_noise_images(tmp_path / "data" / "b", 5, seed=1)
    index = index_folder(tmp_path / "data")
    plan = epoch_batches(len(index.files), 5, steps=4, seed=3, epoch=1)

    in_memory_images, in_memory_labels = collect(BatchSource(index, SMALL, in_memory=True, workers=0), plan)
    streamed_images, streamed_labels = collect(BatchSource(index, SMALL, in_memory=False, workers=2), plan)

    assert len(streamed_images) == len(plan)
    for expected, found in zip(in_memory_images, streamed_images, strict=True):
        assert torch.equal(expected, found)
    for expected, found in zip(in_memory_labels, streamed_labels, strict=True):
        assert torch.equal(expected, found)


def test_streaming_drops_a_corrupt_file_from_its_batch_and_records_it(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cars" / "a.png", (255, 0, 0))
    write_image(root / "cars" / "b.png", (250, 0, 0))
    (root / "cars" / "c.jpg").write_text("not a photo\n")
    write_image(root / "planes" / "d.png", (0, 0, 255))
    index = index_folder(root)
    plan = [[0, 1, 2], [3]]
    source = BatchSource(index, SMALL, in_memory=False, workers=0)

    for _ in range(2):  # a second epoch records the file once
        images, labels = collect(source, plan)
        assert [len(batch) for batch in images] == [2, 1]
        assert [batch.tolist() for batch in labels] == [[0, 0], [1]]
        assert images[0][:, 0, 8, 8].tolist() == [255, 250]

    [skipped] = source.skipped
    assert skipped.path == str(root / "cars" / "c.jpg")
    assert "not an image" in skipped.reason


def test_in_memory_source_skips_corrupt_files_up_front(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cars" / "a.png")
    write_bad_files(root / "cars")
    write_image(root / "planes" / "d.png", (0, 0, 255))
    source = BatchSource(index_folder(root), SMALL, in_memory=True, workers=2)
    assert len(source) == 2
    assert source.labels == [0, 1]
    assert sorted(Path(s.path).name for s in source.skipped) == ["empty.jpg", "notes.jpg", "truncated.jpg"]


def test_streaming_dataset_returns_a_zero_image_and_the_reason_for_a_bad_file(tmp_path):
    root = tmp_path / "data"
    good = write_image(root / "cars" / "a.png", (10, 20, 30))
    (root / "cars" / "b.jpg").write_bytes(b"")
    dataset = StreamingImages(index_folder(root), SMALL)
    assert len(dataset) == 2

    image, label, ok, reason, cached = dataset[0]
    assert torch.equal(image, load_tensor(good, SMALL))
    assert (label, ok, reason, cached) == (0, True, "", False)

    image, label, ok, reason, cached = dataset[1]
    assert torch.equal(image, torch.zeros(3, 16, 16, dtype=torch.uint8))
    assert (label, ok) == (0, False)
    assert "empty" in reason
