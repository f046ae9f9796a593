"""Folder datasets: class discovery, odd layouts, splits, in-memory and streaming batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.config import Preprocessing, TrainConfig
from imgclf.data.decoded_cache import DecodedCache
from imgclf.data.folders import (
    DatasetError,
    FolderIndex,
    check_same_classes,
    describe,
    find_classes,
    imbalance_warning,
    index_folder,
    list_images,
    overlap_warning,
    split_folder,
    stratified_split,
    validation_index,
)
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

CARS_PLANES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cars-planes"
TRAINING_SET = CARS_PLANES / "training_set"
SMALL = Preprocessing(image_size=16)


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


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


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """A data folder with everything real users' folders hold besides the photos."""
    root = tmp_path / "data"
    write_image(root / "cats" / "a.jpg")
    write_image(root / "cats" / "B.JPG")
    write_image(root / "cats" / "nested" / "deeper" / "c.Png")
    write_image(root / "cats" / ".ipynb_checkpoints" / "checkpoint.jpg")
    write_image(root / "cats" / "._a.jpg")
    (root / "cats" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cats" / "notes.txt").write_text("photographed in 2021\n")
    write_image(root / "dogs" / "e.jpeg")
    write_image(root / ".ipynb_checkpoints" / "x.jpg")
    write_image(root / "__MACOSX" / "cats" / "._a.jpg")
    write_image(root / "loose.jpg")
    (root / "README.txt").write_text("cats and dogs\n")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_real_training_set_has_two_sorted_classes_of_80():
    index = index_folder(TRAINING_SET)
    assert index.class_names == ["cars", "planes"]
    assert len(index.files) == 160
    assert index.labels == [0] * 80 + [1] * 80
    assert index.files == sorted(index.files)
    folders = [Path(file).parent.name for file in index.files]
    assert folders == [index.class_names[label] for label in index.labels]
    assert str(TRAINING_SET / "planes" / "netherlands 3.JPG") in index.files
    assert (index.skipped_hidden, index.skipped_not_image, index.loose_files) == (0, 0, 0)
    assert describe(index).startswith("Found 160 images belonging to 2 classes.")
    assert describe(index).endswith("Per class: cars 80, planes 80.")


def test_messy_folder_finds_nested_images_in_any_case_and_counts_what_it_skips(messy_folder):
    index = index_folder(messy_folder)
    assert index.class_names == ["cats", "dogs"]
    assert [Path(f).relative_to(messy_folder).as_posix() for f in index.files] == [
        "cats/B.JPG",
        "cats/a.jpg",
        "cats/nested/deeper/c.Png",
        "dogs/e.jpeg",
    ]
    assert index.labels == [0, 0, 0, 1]
    assert index.skipped_hidden == 2  # .DS_Store and ._a.jpg; the hidden folder is never searched
    assert index.skipped_not_image == 1  # notes.txt
    assert index.loose_files == 2  # loose.jpg and README.txt sit beside the class folders
    assert describe(index) == "Found 4 images belonging to 2 classes. Per class: cats 3, dogs 1."


def test_hidden_folders_and_macosx_are_never_classes(messy_folder):
    assert find_classes(messy_folder) == ["cats", "dogs"]


def test_list_images_expands_folders_recursively_and_keeps_given_files(messy_folder):
    found = list_images([messy_folder / "cats", messy_folder / "loose.jpg"])
    assert [Path(f).relative_to(messy_folder).as_posix() for f in found] == [
        "cats/B.JPG",
        "cats/a.jpg",
        "cats/nested/deeper/c.Png",
        "loose.jpg",
    ]


def test_list_images_names_a_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as caught:
        list_images([tmp_path / "nowhere"])
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_list_images_without_images_lists_allowed_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos here\n")
    with pytest.raises(DatasetError, match="Found no images.*Allowed formats: .jpg"):
        list_images([tmp_path])


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as caught:
        index_folder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_folder_without_class_folders_explains_the_layout(tmp_path):
    write_image(tmp_path / "car1.jpg")
    write_image(tmp_path / ".ipynb_checkpoints" / "car1.jpg")
    with pytest.raises(DatasetError, match="has no class sub-folders") as caught:
        index_folder(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert f"{tmp_path}/<class>/<image>" in message


def test_class_folders_without_images_list_the_classes_and_formats(tmp_path):
    (tmp_path / "cars").mkdir()
    (tmp_path / "planes").mkdir()
    (tmp_path / "planes" / "notes.txt").write_text("to do: add photos\n")
    with pytest.raises(DatasetError, match="Found no images") as caught:
        index_folder(tmp_path)
    message = str(caught.value)
    assert "['cars', 'planes']" in message
    assert "Allowed formats: .jpg, .jpeg, .png" in message


def relative(files: list[str], root: Path) -> list[str]:
    return [Path(f).relative_to(root).as_posix() for f in files]


def test_a_link_loop_in_a_class_folder_is_passed_over_and_no_image_changes_class(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cars" / "a.png")
    write_image(root / "planes" / "b.png")
    (root / "cars" / "up").symlink_to("..")  # back to data/: would hand the planes to cars, and loop
    (root / "planes" / "self").symlink_to(".")

    index = index_folder(root)

    assert relative(index.files, root) == ["cars/a.png", "planes/b.png"]
    assert index.labels == [0, 1]
    assert index.skipped_linked_folders == 2
    assert relative(list_images([root]), root) == ["cars/a.png", "planes/b.png"]
    assert relative(list_images([root / "cars"]), root) == ["cars/a.png"]


def test_linked_photo_folders_are_followed_and_each_folder_is_searched_once(tmp_path):
    library = tmp_path / "library"
    write_image(library / "cars" / "x.png")
    write_image(library / "cars" / "more" / "y.png")
    write_image(library / "other" / "not-a-car.png")
    (library / "cars" / "more" / "all").symlink_to("../..")  # the whole library, which holds this link
    root = tmp_path / "data"
    write_image(root / "cars" / "a.png")
    (root / "cars" / "linked").symlink_to(library / "cars")
    (root / "cars" / "linked-again").symlink_to(library / "cars")
    write_image(root / "planes" / "b.png")

    index = index_folder(root)

    assert relative(index.files, root) == ["cars/a.png", "cars/linked/x.png", "cars/linked/more/y.png", "planes/b.png"]
    assert index.labels == [0, 0, 0, 1]
    assert index.skipped_linked_folders == 2  # linked-again, and the loop through the library
    assert index_folder(root).files == index.files


def test_class_folders_with_no_images_stop_a_run_but_not_indexing(tmp_path):
    data = tmp_path / "data"
    write_image(data / "cars" / "a.png")
    write_image(data / "cars" / "b.png")
    (data / "planes").mkdir()
    (data / "trucks").mkdir()
    (data / "trucks" / "notes.txt").write_text("to do: add photos\n")

    # audit and evaluate index folders that lack some classes, so indexing itself still works.
    assert index_folder(data).class_counts() == [2, 0, 0]
    for config in (TrainConfig(data=str(data)), TrainConfig(data=str(data), val_split=0.5)):
        with pytest.raises(DatasetError) as caught:
            split_folder(config, index_folder(data))
        message = str(caught.value)
        assert "\n" not in message
        assert f"{data / 'planes'}, {data / 'trucks'} " in message
        assert "per class: cars 2, planes 0, trucks 0" in message
        assert "Add images to them or remove them" in message


def test_a_validation_class_folder_with_no_images_is_named(tmp_path):
    write_image(tmp_path / "train" / "cars" / "a.png")
    write_image(tmp_path / "train" / "planes" / "b.png")
    write_image(tmp_path / "val" / "cars" / "c.png")
    (tmp_path / "val" / "planes").mkdir()
    with pytest.raises(DatasetError, match="Found no images in the class folder") as caught:
        validation_index(TrainConfig(data=str(tmp_path / "train"), val=str(tmp_path / "val")))
    assert f"{tmp_path / 'val' / 'planes'} (per class: cars 1, planes 0)" in str(caught.value)


def test_validating_on_the_training_folder_is_warned_about_not_refused(tmp_path):
    data = tmp_path / "data"
    write_image(data / "cars" / "a.png")
    write_image(data / "planes" / "b.png")
    (tmp_path / "same").symlink_to(data)
    assert overlap_warning(data, tmp_path / "val") is None
    warning = overlap_warning(data, tmp_path / "same")
    assert warning.startswith(f"--val {tmp_path / 'same'} is the training folder {data}, ")
    assert "val_loss and val_accuracy measure nothing" in warning and "--val-split" in warning
    train, val = split_folder(TrainConfig(data=str(data), val=str(tmp_path / "same")), index_folder(data))
    assert len(train.files) == len(val.files) == 2


def test_a_validation_folder_inside_the_training_folder_or_around_it_is_warned_about(tmp_path):
    inside = overlap_warning(tmp_path / "data", tmp_path / "data" / "cars" / "held-out")
    assert inside is not None and "is inside the training folder" in inside
    around = overlap_warning(tmp_path / "data" / "train", tmp_path / "data")
    assert around is not None and f"the training folder {tmp_path / 'data' / 'train'} is inside --val" in around
    assert overlap_warning(tmp_path / "data" / "train", tmp_path / "data" / "train-val") is None


def test_check_same_classes_names_both_lists():
    train = FolderIndex("data/train", ["cars", "planes"], [], [])
    val = FolderIndex("data/val", ["cars", "trucks"], [], [])
    check_same_classes(train, FolderIndex("data/val", ["cars", "planes"], [], []))
    with pytest.raises(DatasetError) as caught:
        check_same_classes(train, val)
    message = str(caught.value)
    assert "data/val has classes ['cars', 'trucks']" in message
    assert "data/train has ['cars', 'planes']" in message


def test_stratified_split_keeps_each_class_share():
    labels = [0] * 100 + [1] * 50
    train, val = stratified_split(labels, 0.2, seed=0)
    assert Counter(labels[i] for i in val) == {0: 20, 1: 10}
    assert Counter(labels[i] for i in train) == {0: 80, 1: 40}
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(150))


def test_stratified_split_depends_on_the_seed_alone():
    labels = [0] * 100 + [1] * 50
    assert stratified_split(labels, 0.2, seed=3) == stratified_split(labels, 0.2, seed=3)
    assert stratified_split(labels, 0.2, seed=3)[1] != stratified_split(labels, 0.2, seed=4)[1]


def test_stratified_split_keeps_a_tiny_class_in_both_parts():
    labels = [0] * 20 + [1] * 2
    train, val = stratified_split(labels, 0.2, seed=0)
    assert Counter(labels[i] for i in val) == {0: 4, 1: 1}
    assert Counter(labels[i] for i in train) == {0: 16, 1: 1}


def index_with_counts(counts: list[int]) -> FolderIndex:
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    return FolderIndex("data", ["cars", "planes"], [f"{i}.jpg" for i in range(len(labels))], labels)


def test_imbalance_warning_fires_above_three_to_one_only():
    assert imbalance_warning(index_with_counts([30, 10])) is None
    assert imbalance_warning(index_with_counts([10, 10])) is None
    warning = imbalance_warning(index_with_counts([31, 10]))
    assert warning is not None
    assert "{'cars': 31, 'planes': 10}" in warning
    assert "--class-weight auto" in warning
    empty = imbalance_warning(index_with_counts([5, 0]))
    assert "Classes ['planes']" in empty and "have no images" in empty and "--class-weight" not in empty


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
