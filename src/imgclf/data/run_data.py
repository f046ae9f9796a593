"""A run's training and validation images, from its config: DATA's class folders, or a labels CSV (`--labels`)
whose paths are relative to DATA (`--images`).

Both give the same `FolderIndex`es, so the caches, the split, the report and the audit read them alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

from imgclf.config import TrainConfig
from imgclf.data import folders
from imgclf.data.folders import DatasetError, FolderIndex
from imgclf.data.labels_csv import LabelsTable, read_labels

log = logging.getLogger(__name__)


def split_data(config: TrainConfig) -> tuple[FolderIndex, FolderIndex]:
    """(train, val) for a run: `folders.split_folder` of DATA, or `split_table` of the `--labels` CSV."""
    if config.labels is not None:
        return split_table(config, read_labels(config.labels, config.data, config.multi_label))
    data_index = folders.index_folder(config.data)
    if data_index.skipped_hidden or data_index.skipped_not_image or data_index.loose_files:
        log.info(
            "Passed over in %s: %d hidden files, %d non-image files, %d files outside class folders.",
            config.data,
            data_index.skipped_hidden,
            data_index.skipped_not_image,
            data_index.loose_files,
        )
    return folders.split_folder(config, data_index)


def validation_index(config: TrainConfig) -> FolderIndex:
    """The validation images a run was trained with (its `--val` folder, its CSV's val rows, or its
    `--val-split`)."""
    return split_data(config)[1]


def split_table(config: TrainConfig, table: LabelsTable) -> tuple[FolderIndex, FolderIndex]:
    """(train, val) of a labels CSV: its train and val rows, or, when it has no val rows, a `--val-split` of its
    train rows (all rows without a split column). Test rows never train.

    Raises `DatasetError` when a class has no training rows (or no val rows, when the CSV gives them), or when
    the CSV has val rows and `--val-split` is given too.
    """
    train = table.part("train")
    _check_every_class(table, train, "train")
    if table.splits is None or "val" not in table.splits:
        return folders.hold_out(config, train)
    if config.val_split is not None:
        raise DatasetError(
            f"{table.path} has val rows in its split column, which --val-split would replace. "
            f"Received: --val-split={config.val_split}. Drop --val-split, or mark those rows train."
        )
    val = table.part("val")
    _check_every_class(table, val, "val")
    log.info("Validation: the %d val rows of %s.", len(val.files), table.path)
    return train, val


def labelled_images(
    labels: str | Path, images: str | Path | None = None, split: str | None = None, multi_label: bool = False
) -> FolderIndex:
    """The images of a labels CSV (`images`: the folder its paths are relative to, default the CSV's), all of
    them or those of `split` ("train", "val" or "test"; the CSV needs a split column); `multi_label` reads
    every label cell as a set, as a multi-label run needs."""
    table = read_labels(labels, images if images is not None else Path(labels).parent, multi_label)
    if split is None:
        return table.index
    if table.splits is None:
        raise DatasetError(
            f"{labels} has no split column. Received: --split={split}. Add a split column (train, val, test), "
            "or drop --split to use every row."
        )
    index = table.part(split)
    if not index.files:
        raise DatasetError(f"{labels} has no {split} rows. Received: --split={split}. Choose a split it has.")
    return index


def _check_every_class(table: LabelsTable, index: FolderIndex, split: str) -> None:
    counts = index.class_counts()
    empty = [name for name, count in zip(index.class_names, counts) if count == 0]
    if empty:
        per_class = ", ".join(f"{name} {count}" for name, count in zip(index.class_names, counts))
        raise DatasetError(
            f"{table.path} has no {split} rows of the class(es) {empty} (per class: {per_class}). Every class "
            f"needs {split} images: label some of those images {split} in the split column, or remove the class's "
            "rows."
        )
