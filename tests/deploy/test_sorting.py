"""Sorting photos into a folder per predicted class: copies or links, never an overwrite, the photos untouched."""

from __future__ import annotations

import csv
import errno
import hashlib
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import imgclf
from imgclf.data.folders import list_images
from imgclf.deploy.sorting import SortingError, check_folder_names, check_out_dir, sort_into


def snapshot(folder: Path) -> dict[str, tuple[str, int, float]]:
    """Every entry under `folder`: its SHA-256 (files), its mode and its modification time."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        status = path.stat()
        entries[str(path.relative_to(folder))] = (digest, status.st_mode, status.st_mtime)
    return entries


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as file:
        return list(csv.DictReader(file))


def files_in(out_dir: Path) -> Counter:
    return Counter(path.parent.name for path in out_dir.rglob("*") if path.is_file() and path.parent != out_dir)


@pytest.fixture
def photos(small_photos: Path) -> Path:
    """23 real photos, two of them with the same name in different folders, and one unreadable file."""
    name = sorted(os.listdir(small_photos / "val" / "cars"))[0]
    shutil.copy(small_photos / "val" / "cars" / name, small_photos / "train" / "planes" / name)
    (small_photos / "train" / "cars" / "empty.jpg").write_bytes(b"")
    return small_photos


@pytest.fixture
def unsure_run(trained_run, photos):
    """The trained run, calling about half of the photos unsure."""
    run = imgclf.load(trained_run.run_dir, engine="torch")
    probabilities = [p.probability for p in run.predict(list_images([photos])) if p.error is None]
    run.min_confidence = float(np.median(probabilities))
    return run


def test_sorting_copies_each_photo_into_its_label_and_leaves_the_photos_as_they_were(unsure_run, photos, tmp_path):
    before = snapshot(photos)
    files = list_images([photos])
    out = tmp_path / "sorted"

    result = sort_into(unsure_run, files, out, batch_size=8)

    rows = read_rows(out / "predictions.csv")
    assert [row["file"] for row in rows] == files  # every image, in order, the unreadable one too
    labels = Counter(row["label"] for row in rows if not row["error"])
    assert files_in(out) == labels == result.per_folder
    assert set(labels) <= {"cars", "planes", "unsure"} and labels["unsure"] > 0
    assert [row["file"] for row in rows if row["error"]] == [str(photos / "train" / "cars" / "empty.jpg")]
    for row in rows:
        if not row["error"]:
            assert (out / row["sorted_to"]).read_bytes() == Path(row["file"]).read_bytes()
            assert Path(row["sorted_to"]).parts[0] == row["label"]
    assert snapshot(photos) == before
    assert (result.tally.images, result.tally.unreadable, result.skipped) == (24, 1, 0)


def test_a_second_sort_skips_what_is_done(unsure_run, photos, tmp_path):
    out = tmp_path / "sorted"
    files = list_images([photos])
    sort_into(unsure_run, files, out)
    after_first = snapshot(out)

    again = sort_into(unsure_run, files, out)

    assert snapshot(out) == after_first
    assert (again.tally.images, again.skipped) == (0, 24)


def test_a_name_clash_gets_a_number_and_nothing_is_overwritten(trained_run, photos, tmp_path):
    out = tmp_path / "sorted"
    name = sorted(os.listdir(photos / "val" / "cars"))[0]
    twins = [str(photos / "val" / "cars" / name), str(photos / "train" / "planes" / name)]
    label = trained_run.predict(twins[0]).label
    (out / label).mkdir(parents=True)
    (out / label / name).write_bytes(b"someone else's file")

    sort_into(trained_run, twins, out)

    stem, suffix = os.path.splitext(name)
    assert (out / label / name).read_bytes() == b"someone else's file"
    assert [row["sorted_to"] for row in read_rows(out / "predictions.csv")] == [
        f"{label}/{stem}-2{suffix}",
        f"{label}/{stem}-3{suffix}",
    ]


def test_link_makes_hard_links_and_copies_where_it_cannot(trained_run, photos, tmp_path, monkeypatch, caplog):
    files = list_images([photos / "val"])
    linked = sort_into(trained_run, files, tmp_path / "linked", link=True)
    for row in read_rows(tmp_path / "linked" / "predictions.csv"):
        assert os.path.samefile(row["file"], tmp_path / "linked" / row["sorted_to"])
    assert linked.tally.images == 6

    def other_disk(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", other_disk)
    with caplog.at_level(logging.WARNING, logger="imgclf"):
        sort_into(trained_run, files, tmp_path / "copied", link=True)
    assert [record.getMessage() for record in caplog.records] == [
        f"Cannot hard-link {files[0]} into {tmp_path / 'copied'} (Invalid cross-device link); copying instead."
    ]
    for row in read_rows(tmp_path / "copied" / "predictions.csv"):
        copy = tmp_path / "copied" / row["sorted_to"]
        assert not os.path.samefile(row["file"], copy) and copy.read_bytes() == Path(row["file"]).read_bytes()


@pytest.mark.parametrize(
    ("class_names", "min_confidence"),
    [
        (["cars", ".."], None),
        (["cars", "a/b"], None),
        (["cars", ""], None),
        (["cars", ".hidden"], None),
        (["cars", "Cars"], None),
        (["cars", "predictions.csv"], None),
        (["cars", "unsure"], 0.8),
    ],
)
def test_class_names_that_are_no_safe_folder_name_are_refused(class_names, min_confidence):
    with pytest.raises(SortingError, match=r"cannot be a folder of --sort-into. Received: class_names="):
        check_folder_names(class_names, min_confidence)


def test_class_names_that_make_safe_folders_pass():
    check_folder_names(["cars", "unsure", "planes…", "two words"], None)


def test_the_sorted_folder_may_not_be_inside_the_photos(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(SortingError, match="inside the photos to sort"):
        check_out_dir(tmp_path / "photos" / "sorted", [tmp_path / "photos"])
    check_out_dir(tmp_path / "sorted", [tmp_path / "photos"])
