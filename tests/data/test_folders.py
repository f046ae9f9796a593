"""Folder datasets: class discovery, odd layouts, links, validation folders, splits and imbalance."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from tests.conftest import CARS_PLANES, write_image

from imgclf.config import TrainConfig
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
    photo_groups,
    split_folder,
    stratified_split,
)
from imgclf.data.run_data import validation_index

TRAINING_SET = CARS_PLANES / "training_set"


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


@pytest.fixture(scope="module")
def tutorial_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's 200 photos in one folder per class (training_set and val_set merged), read-only."""
    root = tmp_path_factory.mktemp("tutorial") / "all"
    for split in ("training_set", "val_set"):
        for photo in sorted((CARS_PLANES / split).glob("*/*.jpg")):
            (root / photo.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, root / photo.parent.name / photo.name)
    return root


@pytest.fixture(scope="module")
def tutorial_groups(tutorial_photos: Path) -> tuple[FolderIndex, list[list[int]]]:
    index = index_folder(tutorial_photos)
    return index, photo_groups(index.files)


def sides_of(groups: list[list[int]], val: list[int]) -> list[set[bool]]:
    """For each group, the sides (True: validation) its photos sit on."""
    in_val = set(val)
    return [{member in in_val for member in group} for group in groups]


def test_the_tutorial_photos_hold_the_same_airliner_twice(tutorial_groups):
    index, groups = tutorial_groups
    names = [sorted(Path(index.files[member]).name for member in group) for group in groups]
    assert ["airplane-1554870_960_720.jpg", "airplane-1554870__340.jpg"] in names


def test_a_val_split_keeps_every_copy_of_a_photo_on_one_side_for_any_seed(tutorial_groups):
    index, groups = tutorial_groups
    counts = Counter(index.labels)
    leaked = 0
    for seed in range(50):
        train, val = stratified_split(index.labels, 0.2, seed, groups)
        assert all(len(sides) == 1 for sides in sides_of(groups, val)), f"seed {seed}"
        assert (train, val) == stratified_split(index.labels, 0.2, seed, groups)
        assert sorted(train + val) == list(range(len(index.files)))
        per_class = Counter(index.labels[i] for i in val)
        largest_group = max(map(len, groups))
        assert all(abs(per_class[label] - round(0.2 * count)) < largest_group for label, count in counts.items())
        plain_val = stratified_split(index.labels, 0.2, seed)[1]
        leaked += any(len(sides) == 2 for sides in sides_of(groups, plain_val))
    assert leaked > 0  # a split at random puts copies on both sides for some of these seeds


def test_different_seeds_give_different_group_aware_splits(tutorial_groups):
    index, groups = tutorial_groups
    assert stratified_split(index.labels, 0.2, 1, groups)[1] != stratified_split(index.labels, 0.2, 2, groups)[1]


def test_a_group_goes_whole_to_one_side_even_across_classes():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    for seed in range(20):
        train, val = stratified_split(labels, 0.25, seed, groups=[[0, 1], [2, 3, 4]])
        # Class 0 holds both groups (photo 4, a class-1 copy, goes with its group): its one validation image does
        # not fit, so the smaller group goes; class 1 gives one of its three other photos.
        assert {2, 3, 4} <= set(train) and {0, 1} <= set(val)
        assert len(set(val) & {5, 6, 7}) == 1


def test_a_class_of_copies_still_has_validation_images():
    train, val = stratified_split([0, 0, 0, 0], 0.2, seed=0, groups=[[0, 1], [2, 3]])
    assert sorted(map(len, (train, val))) == [2, 2]
    assert stratified_split([0, 0], 0.5, seed=0, groups=[[0, 1]]) == ([0, 1], [])  # one photo: one side


def test_split_folder_keeps_copies_together_says_so_and_validation_index_agrees(tutorial_photos, caplog):
    config = TrainConfig(data=str(tutorial_photos), val_split=0.2, seed=7)
    with caplog.at_level("INFO", logger="imgclf.data.folders"):
        train, val = split_folder(config, index_folder(tutorial_photos))
    assert "Kept 2 groups of identical or near-identical photos (4 images) on one side of the split." in caplog.text
    airliner = {file for file in train.files + val.files if "airplane-1554870" in file}
    assert len(airliner) == 2 and (airliner <= set(train.files) or airliner <= set(val.files))
    assert validation_index(config).files == val.files  # what `report` and `export` re-derive


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
