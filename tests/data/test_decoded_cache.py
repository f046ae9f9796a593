"""The on-disk cache of decoded images: hits skip decoding, exactly the same pixels, safe when damaged or shared."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import copy_photos

import imgclf
from imgclf.cli import main
from imgclf.config import ConfigError, Preprocessing
from imgclf.data import images
from imgclf.data.decoded_cache import DecodedCache, cache_root, decode_key
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor
from imgclf.data.loading import BatchSource, decode_files, decode_images, epoch_batches, sequential_batches
from imgclf.training.options import make_train_config

SMALL = Preprocessing(image_size=32)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The format of every image decoded from now on (imgclf's one decoding function, counted)."""
    calls: list[str] = []
    original = images._decode

    def counting(image: Image.Image, *args, **kwargs) -> Image.Image:
        calls.append(image.format)
        return original(image, *args, **kwargs)

    monkeypatch.setattr(images, "_decode", counting)
    return calls


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any decoding fail loudly, in this process and in DataLoader workers forked from it."""

    def refuse(image: Image.Image, size: int | None, interpolation: str) -> Image.Image:
        raise AssertionError("an image was decoded although the cache holds it")

    monkeypatch.setattr(images, "_decode", refuse)


@pytest.fixture
def photos(tmp_path: Path, cars_planes: Path) -> Path:
    """A writable copy of 3 real photos per class, plus the 3840×2160 phone photo."""
    root = copy_photos(cars_planes / "training_set", tmp_path / "photos", 3)
    shutil.copy(cars_planes / "training_set" / "planes" / "netherlands 3.JPG", root / "planes")
    return root


def entries(cache_folder: Path) -> list[Path]:
    return sorted((cache_folder / "decoded").rglob("*.pixels"))


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `folder` with its size, modification time and content hash."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "",
        )
        for path in sorted(folder.rglob("*"))
    }


def write_odd_images(folder: Path) -> list[Path]:
    """Images in the modes and formats users have: each goes through a different decoding path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    rotated = rgb.copy()
    exif = rotated.getexif()
    exif[274] = 6  # EXIF orientation: rotate 90° on display
    rotated.save(folder / "rotated.jpg", exif=exif)
    rgb.save(folder / "photo.webp", quality=80)
    rgb.save(folder / "photo.tif")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.gif")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)))
    rgba.save(folder / "transparent.png")
    Image.fromarray(rng.integers(0, 65536, (40, 40), dtype=np.uint16)).save(folder / "deep.png")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("size", [64, 224])
def test_a_second_decode_reads_the_cache_and_decodes_nothing(photos, decodes, feature_cache_in_tmp, size):
    preprocessing = Preprocessing(image_size=size)
    index = index_folder(photos)

    first = decode_images(index, preprocessing, workers=2, cache=DecodedCache(preprocessing))
    assert len(decodes) == len(index.files) == 7
    assert first.cache_hits == 0
    assert len(entries(feature_cache_in_tmp)) == 7

    decodes.clear()
    second = decode_images(index, preprocessing, workers=2, cache=DecodedCache(preprocessing))
    assert decodes == []
    assert second.cache_hits == 7
    assert torch.equal(first.images, second.images)


def test_cached_pixels_equal_freshly_decoded_pixels_exactly(photos, tmp_path, cars_planes):
    files = [
        *index_folder(photos).files,
        cars_planes / "val_set" / "planes" / "united arab emirates 9.jpg",  # EXIF-rotated phone photo
        *write_odd_images(tmp_path / "odd"),
    ]
    for preprocessing in (SMALL, Preprocessing(image_size=224, interpolation="bicubic")):
        cache = DecodedCache(preprocessing)
        for path in map(str, files):
            expected = load_tensor(path, preprocessing)
            stored, stored_from_cache = cache.load(path)
            read, read_from_cache = cache.load(path)
            assert (stored_from_cache, read_from_cache) == (False, True), path
            assert torch.equal(stored, expected) and torch.equal(read, expected), path
            assert read.is_contiguous()  # channel planes: batches copy them faster than channels-last views


def test_an_edited_file_is_decoded_again_and_a_renamed_one_is_not(tmp_path, decodes):
    path = tmp_path / "photo.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(path)
    cache = DecodedCache(SMALL)
    cache.load(str(path))

    Image.new("RGB", (20, 20), (0, 0, 255)).save(path)  # same path, new content
    image, from_cache = cache.load(str(path))
    assert not from_cache
    assert image[:, 5, 5].tolist() == [0, 0, 255]

    decodes.clear()
    renamed = path.rename(tmp_path / "renamed.png")
    image, from_cache = cache.load(str(renamed))
    assert from_cache and decodes == []
    assert image[:, 5, 5].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data + b"\0", id="longer"),
        pytest.param(lambda data: bytes([data[0] ^ 0xFF]) + data[1:], id="a-changed-pixel"),
        pytest.param(lambda data: b"garbage", id="garbage"),
    ],
)
def test_a_damaged_entry_is_decoded_again_and_rewritten(photos, feature_cache_in_tmp, damage):
    path = index_folder(photos).files[0]
    cache = DecodedCache(SMALL)
    cache.load(path)
    [entry] = entries(feature_cache_in_tmp)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))

    image, from_cache = cache.load(path)

    assert not from_cache
    assert torch.equal(image, load_tensor(path, SMALL))
    assert entry.read_bytes() == good
    assert cache.load(path)[1]


def test_a_damaged_entry_is_decoded_again_by_streaming_workers(photos, feature_cache_in_tmp):
    index = index_folder(photos)
    plan = [list(range(len(index.files)))]
    BatchSource(index, SMALL, in_memory=True, workers=2, cache=DecodedCache(SMALL))
    for entry in entries(feature_cache_in_tmp):
        entry.write_bytes(entry.read_bytes()[:100])

    [(batch, _)] = BatchSource(index, SMALL, in_memory=False, workers=2, cache=DecodedCache(SMALL)).batches(plan)

    assert torch.equal(batch, torch.stack([load_tensor(path, SMALL) for path in index.files]))


def test_unreadable_images_are_skipped_with_their_reason_and_never_stored(tmp_path, feature_cache_in_tmp, photos):
    root = tmp_path / "data"
    copy_photos(photos, root, 1)
    data = next((root / "cars").iterdir()).read_bytes()
    (root / "cars" / "empty.jpg").write_bytes(b"")
    (root / "cars" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "planes" / "notes.jpg").write_text("not a photo\n")
    index = index_folder(root)
    uncached = decode_images(index, SMALL)

    for _ in range(2):  # and the same again on the next run: failures are never cached as good
        cached = decode_images(index, SMALL, cache=DecodedCache(SMALL))
        assert [(s.path, s.reason) for s in cached.skipped] == [(s.path, s.reason) for s in uncached.skipped]
        assert len(cached.skipped) == 3
        assert cached.files == uncached.files
        assert torch.equal(cached.images, uncached.images)
    assert len(entries(feature_cache_in_tmp)) == 2


def test_a_missing_file_is_skipped_with_the_same_reason_as_without_the_cache(tmp_path):
    _, kept, [skipped], hits = decode_files([str(tmp_path / "gone.jpg")], SMALL, cache=DecodedCache(SMALL))
    assert (kept, hits) == ([], 0)
    assert skipped.reason == decode_files([str(tmp_path / "gone.jpg")], SMALL)[2][0].reason == "no such file"


def test_streaming_through_dataloader_workers_fills_and_then_reads_the_cache(
    photos, feature_cache_in_tmp, monkeypatch, caplog
):
    # Copies of one photo under other names make two worker processes store the same entry at once.
    for i in range(4):
        shutil.copy(index_folder(photos).files[0], photos / "cars" / f"copy-{i}.jpg")
    (photos / "planes" / "notes.jpg").write_text("not a photo\n")
    index = index_folder(photos)
    expected = {path: load_tensor(path, SMALL) for path in index.files if not path.endswith("notes.jpg")}
    plan = epoch_batches(len(index.files), 3, steps=None, seed=0, epoch=0)

    def stream() -> tuple[list[torch.Tensor], BatchSource]:
        source = BatchSource(index, SMALL, in_memory=False, workers=2, cache=DecodedCache(SMALL))
        with caplog.at_level(logging.INFO, logger="imgclf.data"):
            batches = [images for images, _ in source.batches(plan)]
        return batches, source

    stored, _ = stream()
    assert len(entries(feature_cache_in_tmp)) == len(expected) - 4  # the copies share one entry
    assert not list(feature_cache_in_tmp.rglob("*.tmp"))

    caplog.clear()
    forbid_decoding(monkeypatch)
    read, source = stream()

    for first, second in zip(stored, read, strict=True):
        assert torch.equal(first, second)
    readable = [[index.files[i] for i in batch if index.files[i] in expected] for batch in plan]
    for batch, files in zip(read, readable, strict=True):
        assert torch.equal(batch, torch.stack([expected[path] for path in files]))
    [skipped] = source.skipped
    assert skipped.path.endswith("notes.jpg") and "not an image" in skipped.reason
    message = f"{len(expected)} images of {photos} read from it, 0 decoded, 1 unreadable."
    assert [r.message for r in caplog.records if "Decoded-image cache" in r.message][0].endswith(message)


def cache_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.message.split(": ", 1)[1] for r in caplog.records if "Decoded-image cache" in r.message]


def test_the_cache_line_counts_unreadable_files_apart_from_decoded_ones(photos, caplog):
    (photos / "planes" / "notes.jpg").write_text("not a photo\n")
    index = index_folder(photos)

    with caplog.at_level(logging.INFO, logger="imgclf.data"):
        BatchSource(index, SMALL, in_memory=True, workers=2, cache=DecodedCache(SMALL))
        BatchSource(index, SMALL, in_memory=True, workers=2, cache=DecodedCache(SMALL))

    assert cache_messages(caplog) == [
        f"0 images of {photos} read from it, 7 decoded, 1 unreadable.",
        f"7 images of {photos} read from it, 0 decoded, 1 unreadable.",
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_logs_the_cache_line_with_its_last_batch_even_when_training_reads_no_further(photos, caplog, workers):
    index = index_folder(photos)
    plan = epoch_batches(len(index.files), 3, steps=4, seed=0, epoch=0)  # 12 images: some read twice
    source = BatchSource(index, SMALL, in_memory=False, workers=workers, cache=DecodedCache(SMALL))

    with caplog.at_level(logging.INFO, logger="imgclf.data"):
        # As the engine reads batches: zip stops at the last planned batch, without asking the generator again.
        for _ in zip(plan, source.batches(plan)):
            pass

    [message] = cache_messages(caplog)
    hits = int(message.split()[0])
    assert message == f"{hits} images of {photos} read from it, {12 - hits} decoded."
    if workers == 0:
        assert hits == 12 - 7  # one process decodes each of the 7 photos once, then reads it


def test_an_unwritable_cache_folder_warns_once_per_run_while_streaming_through_worker_processes(
    photos, tmp_path, monkeypatch
):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("IMGCLF_CACHE", str(not_a_folder))
    index = index_folder(photos)
    plan = sequential_batches(len(index.files), 2)  # 4 batches: both workers get some
    cache = DecodedCache(SMALL)  # one for the run, as the engine makes it
    # caplog sees only this process; a file handler is inherited by the worker processes too.
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)
    logging.getLogger("imgclf").addHandler(handler)
    try:
        for _ in range(2):  # two epochs, each with new worker processes, of a training and a validation source
            for source in (BatchSource(index, SMALL, False, 2, cache), BatchSource(index, SMALL, False, 2, cache)):
                streamed = torch.cat([images for images, _ in source.batches(plan)])
                assert torch.equal(streamed, torch.stack([load_tensor(path, SMALL) for path in index.files]))
    finally:
        logging.getLogger("imgclf").removeHandler(handler)
        handler.close()

    warnings = [line for line in log_file.read_text().splitlines() if "Cannot write the decoded-image cache" in line]
    assert len(warnings) == 1
    assert not list(tmp_path.rglob("*.pixels"))


def test_the_cache_pickles_for_worker_processes(photos):
    path = index_folder(photos).files[0]
    cache = DecodedCache(SMALL)
    cache.load(path)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.folder == cache.folder
    assert copy.load(path)[1]


def test_the_key_follows_size_interpolation_and_resize_but_not_normalisation():
    base = decode_key(Preprocessing(image_size=64))
    assert decode_key(Preprocessing(image_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)) == base
    assert decode_key(Preprocessing(image_size=224)) != base
    assert decode_key(Preprocessing(image_size=64, interpolation="bicubic")) != base
    others = [
        Preprocessing(image_size=64, resize="crop"),
        Preprocessing(image_size=64, resize="pad"),
        Preprocessing(image_size=64, resize="pad", pad_color=(124, 116, 104)),
    ]
    assert len({base, *map(decode_key, others)}) == 4
    assert DecodedCache(SMALL).folder.parent == cache_root()


def test_the_cache_lives_under_imgclf_cache(feature_cache_in_tmp):
    assert cache_root() == feature_cache_in_tmp / "decoded"


def test_an_unwritable_cache_folder_warns_once_and_decoding_goes_on(photos, tmp_path, monkeypatch, caplog):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("IMGCLF_CACHE", str(not_a_folder))
    index = index_folder(photos)

    with caplog.at_level(logging.WARNING):
        decoded = decode_images(index, SMALL, cache=DecodedCache(SMALL))

    assert len(decoded.files) == 7 and decoded.cache_hits == 0
    warnings = [r.message for r in caplog.records if "Cannot write the decoded-image cache" in r.message]
    assert len(warnings) == 1


def test_training_twice_reads_every_image_from_the_cache_and_leaves_the_photos_alone(
    tmp_path, cars_planes, feature_cache_in_tmp, caplog
):
    data = tmp_path / "data"
    copy_photos(cars_planes / "training_set", data / "train", 3)
    copy_photos(cars_planes / "val_set", data / "val", 2)
    before = snapshot(data)
    options = {"model": "seed-cnn", "val": str(data / "val"), "epochs": 1, "batch_size": 4}

    with caplog.at_level(logging.INFO, logger="imgclf.data"):
        imgclf.train(data / "train", out=str(tmp_path / "first"), **options)
        caplog.clear()
        imgclf.train(data / "train", out=str(tmp_path / "second"), **options)

    messages = [r.message for r in caplog.records if "Decoded-image cache" in r.message]
    assert [message.split(": ", 1)[1] for message in messages] == [
        f"6 images of {data / 'train'} read from it, 0 decoded.",
        f"4 images of {data / 'val'} read from it, 0 decoded.",
    ]
    assert len(entries(feature_cache_in_tmp)) == 10
    assert snapshot(data) == before


def test_no_decode_cache_turns_it_off(small_photos, tmp_path, feature_cache_in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--no-decode-cache" in capsys.readouterr().out

    train, val, out = str(small_photos / "train"), str(small_photos / "val"), str(tmp_path / "run")
    code = main(
        ["train", train, "--val", val, "--model", "seed-cnn", "--epochs", "1", "--no-decode-cache", "--out", out]
    )

    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["decode_cache"] is False
    assert not (feature_cache_in_tmp / "decoded").exists()


def test_decode_cache_must_be_true_or_false():
    assert make_train_config("data").decode_cache is True
    with pytest.raises(ConfigError, match="decode-cache"):
        make_train_config("data", decode_cache="no")
