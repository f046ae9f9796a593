"""A run's training and validation images from a labels CSV: its split column, or a held-out share."""

from __future__ import annotations

import csv

import pytest
from tests.conftest import write_rows

from imgclf.config import TrainConfig
from imgclf.data.folders import DatasetError
from imgclf.data.run_data import labelled_images, split_data, validation_index


def csv_config(folder, **options) -> TrainConfig:
    return TrainConfig(data=str(folder), labels=str(folder / "labels.csv"), **options)


def rewrite(folder, change) -> None:
    """Rewrite `folder/labels.csv` with `change(row)` applied to each row, the header (file, label, split) too."""
    with (folder / "labels.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    write_rows(folder / "labels.csv", [tuple(change(row)) for row in rows])


def test_the_split_column_gives_the_validation_images_and_test_rows_never_train(flat_photos):
    tested = {path.name for path in [*sorted(flat_photos.glob("car_*"))[:2], *sorted(flat_photos.glob("plane_*"))[:2]]}
    rewrite(flat_photos, lambda row: [*row[:2], "TEST"] if row[0] in tested else row)

    train, val = split_data(csv_config(flat_photos))

    with (flat_photos / "labels.csv").open(newline="") as file:
        splits = {str(flat_photos / row["file"]): row["split"] for row in csv.DictReader(file)}
    assert {splits[file] for file in train.files} == {"train"}
    assert {splits[file] for file in val.files} == {"val"}
    assert len(train.files) + len(val.files) == sum(split != "TEST" for split in splits.values())
    assert validation_index(csv_config(flat_photos)).files == val.files


def test_without_val_rows_a_seeded_stratified_share_is_held_out(flat_photos):
    rewrite(flat_photos, lambda row: row[:2])  # train rows only: no split column
    config = csv_config(flat_photos, val_split=0.25, seed=3)

    train, val = split_data(config)

    assert sorted(train.files + val.files) == sorted(str(path) for path in flat_photos.glob("*.jpg"))
    assert val.class_counts() == [3, 3] and not set(train.files) & set(val.files)
    assert split_data(config)[1].files == val.files


def test_val_rows_and_val_split_together_are_refused(flat_photos):
    with pytest.raises(DatasetError, match=r"has val rows in its split column.*Received: --val-split=0.3"):
        split_data(csv_config(flat_photos, val_split=0.3))


def test_a_class_with_only_test_rows_cannot_train(flat_photos):
    rewrite(flat_photos, lambda row: [*row[:2], "test"] if row[1] == "planes" else row)

    with pytest.raises(DatasetError, match=r"has no train rows of the class\(es\) \['planes'\] \(per class: cars 8"):
        split_data(csv_config(flat_photos))


def test_a_class_without_val_rows_is_named_when_the_csv_gives_val_rows(flat_photos):
    rewrite(flat_photos, lambda row: [*row[:2], "train"] if row[1] == "cars" else row)

    with pytest.raises(DatasetError, match=r"has no val rows of the class\(es\) \['cars'\]"):
        split_data(csv_config(flat_photos))


def test_labelled_images_takes_a_split_or_every_row(flat_photos):
    assert len(labelled_images(flat_photos / "labels.csv").files) == 22  # paths relative to the CSV's folder
    assert labelled_images(flat_photos / "labels.csv", flat_photos, "val").class_counts() == [3, 3]
    with pytest.raises(DatasetError, match=r"has no test rows. Received: --split=test"):
        labelled_images(flat_photos / "labels.csv", split="test")
    rewrite(flat_photos, lambda row: row[:2])
    with pytest.raises(DatasetError, match=r"has no split column. Received: --split=val"):
        labelled_images(flat_photos / "labels.csv", split="val")
