"""Folder datasets with Keras `flow_from_directory` semantics: indexing, class checks and seeded splits.

`DATA/<class>/**/<image>`: classes are the sorted sub-folder names; files and folders are walked in sorted
order, hidden entries and `__MACOSX` skipped, link loops passed over.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.config import ImgclfError, TrainConfig
from imgclf.data.fingerprints import fingerprints
from imgclf.data.groups import NEAR_THRESHOLD, duplicate_groups
from imgclf.data.images import IMAGE_EXTENSIONS, is_image_file

log = logging.getLogger(__name__)

IGNORED_FOLDERS = ("__MACOSX",)
SKIPPED_SHOWN = 10
"""Unreadable files named one line each; the rest are counted in one line."""


class DatasetError(ImgclfError):
    """A data folder is missing, empty, laid out wrongly, or inconsistent with another split."""


@dataclass
class FolderIndex:
    """The images of a labelled folder: parallel `files` and `labels`, and what was passed over."""

    root: str
    class_names: list[str]
    files: list[str]
    labels: list[int]
    skipped_hidden: int = 0
    skipped_not_image: int = 0
    loose_files: int = 0
    skipped_linked_folders: int = 0  # links not followed: loops, or folders already searched
    multi_label: bool = False
    """Each image has a set of classes: its label is then a bit mask, bit c set for class c (`label_set`)."""

    def class_counts(self) -> list[int]:
        """The images of each class (in multi-label data, the images whose set holds the class)."""
        if self.multi_label:
            return [sum(label >> index & 1 for label in self.labels) for index in range(len(self.class_names))]
        counts = Counter(self.labels)
        return [counts.get(index, 0) for index in range(len(self.class_names))]

    def subset(self, indices: Sequence[int]) -> FolderIndex:
        files, labels = [self.files[i] for i in indices], [self.labels[i] for i in indices]
        return FolderIndex(self.root, self.class_names, files, labels, multi_label=self.multi_label)

    def without(self, files: Collection[str]) -> FolderIndex:
        """The index less `files` (the unreadable ones, say)."""
        return self.subset([i for i, file in enumerate(self.files) if file not in files])


MAX_MULTI_LABEL_CLASSES = 63
"""A multi-label image's classes are the bits of one int64 label, so that every loader carries it unchanged."""


def label_set(label: int) -> list[int]:
    """The class indices of a multi-label image's bit-mask `label`, ascending.

    >>> label_set(0b101)
    [0, 2]
    """
    return [index for index in range(MAX_MULTI_LABEL_CLASSES) if label >> index & 1]


@dataclass
class SkippedFile:
    """A file left out of the run, and why."""

    path: str
    reason: str


def warn_skipped(skipped: Sequence[SkippedFile], listed_in: str | Path) -> None:
    """Warn of the first `SKIPPED_SHOWN` unreadable files one line each, then of all of them in one line that
    says where they are all listed (`listed_in`)."""
    for item in skipped[:SKIPPED_SHOWN]:
        log.warning("Skipped %s: %s", item.path, item.reason)
    if len(skipped) > SKIPPED_SHOWN:
        log.warning(
            "Skipped %d unreadable files in all (the first %d above); %s lists every one.",
            len(skipped),
            SKIPPED_SHOWN,
            listed_in,
        )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _folder_identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _walk_sorted(folder: Path, passed_over: list[Path]) -> Iterator[tuple[Path, list[str]]]:
    """Yield (directory, sorted file names) depth-first in sorted order, never entering hidden folders.

    Linked folders are followed, but each real folder is entered once: a link back to a folder that holds it
    (a loop), or a second way into a folder already searched, is logged and appended to `passed_over` instead.
    """
    searched = {_folder_identity(folder)}
    for directory, subfolders, file_names in os.walk(folder, followlinks=True):
        entered = []
        for name in sorted(d for d in subfolders if not _is_hidden(d) and d not in IGNORED_FOLDERS):
            path = Path(directory, name)
            identity = _folder_identity(path)
            # A loop can lead above `folder`, to a folder this walk never enters, so ancestors are checked by path.
            if path.is_symlink() and Path(directory).resolve().is_relative_to(path.resolve()):
                log.info("Passed over %s: a link back to %s, which holds it (a loop).", path, path.resolve())
                passed_over.append(path)
            elif identity in searched:
                log.info("Passed over %s: it is %s, already searched.", path, path.resolve())
                passed_over.append(path)
            else:
                # Claimed before descending, so a link deeper down does not take a sibling's place.
                searched.add(identity)
                entered.append(name)
        subfolders[:] = entered
        yield Path(directory), sorted(file_names)


def find_classes(root: str | Path) -> list[str]:
    """The sorted class sub-folder names of `root`; hidden folders and `__MACOSX` are never classes."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Data folder {root} does not exist or is not a folder.")
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not _is_hidden(entry.name) and entry.name not in IGNORED_FOLDERS
    )


def index_folder(root: str | Path) -> FolderIndex:
    """Index `root/<class>/**/<image>`: sorted classes, sorted files, hidden and non-image files counted.

    >>> index = index_folder("cars-planes/training_set")
    >>> index.class_names, len(index.files)
    (['cars', 'planes'], 160)
    """
    root = Path(root)
    class_names = find_classes(root)
    if not class_names:
        raise DatasetError(
            f"Data folder {root} has no class sub-folders. Expected {root}/<class>/<image>, "
            f"for example {root}/cars/car1.jpg and {root}/planes/plane1.jpg."
        )
    index = FolderIndex(str(root), class_names, [], [])
    index.loose_files = sum(1 for entry in root.iterdir() if entry.is_file() and not _is_hidden(entry.name))
    passed_over: list[Path] = []
    for label, class_name in enumerate(class_names):
        for directory, file_names in _walk_sorted(root / class_name, passed_over):
            for name in file_names:
                if _is_hidden(name):
                    index.skipped_hidden += 1
                elif not is_image_file(name):
                    index.skipped_not_image += 1
                else:
                    index.files.append(str(directory / name))
                    index.labels.append(label)
    index.skipped_linked_folders = len(passed_over)
    if not index.files:
        raise DatasetError(
            f"Found no images in {root} (classes {class_names}). Allowed formats: {', '.join(IMAGE_EXTENSIONS)}."
        )
    return index


def list_images(paths: Sequence[str | Path]) -> list[str]:
    """Expand files and folders (searched recursively, flat folders allowed) into sorted image paths."""
    found: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(
                str(directory / name)
                for directory, names in _walk_sorted(path, [])
                for name in names
                if not _is_hidden(name) and is_image_file(name)
            )
        elif path.exists():
            found.append(str(path))
        else:
            raise DatasetError(f"{path} does not exist. Give image files or folders of images.")
    if not found:
        raise DatasetError(
            f"Found no images in {[str(p) for p in paths]}. Allowed formats: {', '.join(IMAGE_EXTENSIONS)}."
        )
    return found


def describe(index: FolderIndex) -> str:
    """Keras's sentence, `Found 160 images belonging to 2 classes.`, then the count per class."""
    counts = ", ".join(f"{name} {count}" for name, count in zip(index.class_names, index.class_counts()))
    return f"Found {len(index.files)} images belonging to {len(index.class_names)} classes. Per class: {counts}."


def check_same_classes(train: FolderIndex, val: FolderIndex) -> None:
    """Raise `DatasetError` naming both class lists when the validation folder's classes differ."""
    if train.class_names != val.class_names:
        raise DatasetError(
            f"{val.root} has classes {val.class_names} but {train.root} has {train.class_names}; "
            "the folders must hold the same class sub-folders."
        )


def check_classes_have_images(index: FolderIndex) -> None:
    """Raise `DatasetError` naming the class folders of `index` that hold no images: nothing to learn or check."""
    counts = index.class_counts()
    empty = [str(Path(index.root, name)) for name, count in zip(index.class_names, counts) if count == 0]
    if empty:
        per_class = ", ".join(f"{name} {count}" for name, count in zip(index.class_names, counts))
        raise DatasetError(
            f"Found no images in the class folder(s) {', '.join(empty)} (per class: {per_class}). Add images to "
            f"them or remove them: every sub-folder of {index.root} is a class. "
            f"Allowed formats: {', '.join(IMAGE_EXTENSIONS)}."
        )


def overlap_warning(data: str | Path, val: str | Path) -> str | None:
    """A warning when the validation folder `val` is the training folder `data`, or one holds the other, else None."""
    data_path, val_path = Path(data).resolve(), Path(val).resolve()
    if data_path == val_path:
        where = f"--val {val} is the training folder {data}"
    elif val_path.is_relative_to(data_path):
        where = f"--val {val} is inside the training folder {data}"
    elif data_path.is_relative_to(val_path):
        where = f"the training folder {data} is inside --val {val}"
    else:
        return None
    return (
        f"{where}, so the model trains on validation images and val_loss and val_accuracy measure nothing. "
        "Give --val a folder of other images, or use --val-split to hold some out."
    )


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int, groups: Sequence[Sequence[int]] = ()
) -> tuple[list[int], list[int]]:
    """Split indices into (train, val) keeping each class's share; the same seed gives the same split.

    `groups` lists indices that must land on the same side (copies of one photo); each group counts in the
    class of its first index. A class's groups and single images are shuffled, then taken into val while
    they fit its share. Every class with at least two groups or single images keeps one in each part.
    Without groups the split is the plain stratified one.

    >>> stratified_split([0, 0, 0, 1, 1, 1], 0.34, seed=0, groups=[[0, 1]])
    ([0, 1, 3, 4], [2, 5])
    """
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    unit_of = np.arange(len(labels_array))  # the first index of the image's group, or its own index
    for group in groups:
        unit_of[list(group)] = min(group)
    sizes = np.bincount(unit_of, minlength=len(labels_array))
    leaders = np.flatnonzero(unit_of == np.arange(len(labels_array)))
    in_val = np.zeros(len(labels_array), dtype=bool)
    for label in np.unique(labels_array):
        units = leaders[labels_array[leaders] == label]
        rng.shuffle(units)
        n_images = int(sizes[units].sum())
        n_val = int(round(n_images * val_fraction))
        if n_images >= 2:
            n_val = min(max(n_val, 1), n_images - 1)
        in_val[_units_for_val(units, sizes, n_val)] = True
    val_mask = in_val[unit_of]
    return np.flatnonzero(~val_mask).tolist(), np.flatnonzero(val_mask).tolist()


def _units_for_val(units: np.ndarray, sizes: np.ndarray, n_val: int) -> list[int]:
    """The shuffled `units` (groups by first index) taken into val, in order, while they fit in `n_val` images.

    When none fits but there are two or more, the first smallest goes, so validation never lacks the class.
    """
    chosen, count = [], 0
    for unit in units.tolist():
        if count + sizes[unit] <= n_val:
            chosen.append(unit)
            count += sizes[unit]
    if not chosen and n_val > 0 and len(units) >= 2:
        chosen = [min(units.tolist(), key=lambda unit: sizes[unit])]
    return chosen


def imbalance_warning(index: FolderIndex) -> str | None:
    """A warning when the largest class has over 3× the images of the smallest, else None.

    Training passes the index of the readable images once it knows which are unreadable (`FolderIndex.without`).
    """
    counts = index.class_counts()
    pairs = dict(zip(index.class_names, counts))
    if min(counts) == 0:
        empty = [name for name, count in pairs.items() if count == 0]
        return (
            f"Classes {empty} in {index.root} have no images ({pairs}), so the model cannot learn them: add "
            "readable images to those folders or remove them."
        )
    if max(counts) > 3 * min(counts):
        return (
            f"Classes in {index.root} are imbalanced ({pairs}); consider --class-weight auto "
            "or adding images to the small classes."
        )
    return None


def split_folder(config: TrainConfig, data_index: FolderIndex) -> tuple[FolderIndex, FolderIndex]:
    """(train, val) for a run: DATA and the `--val` folder, or a stratified, seeded `--val-split` of DATA.

    The split keeps copies of one photo (`photo_groups`) on one side, so validation never scores a picture the
    model trained on.

    Raises `DatasetError` when the folders' classes differ or a class folder of either holds no images.
    """
    check_classes_have_images(data_index)
    if config.val is not None:
        val_index = index_folder(config.val)
        check_same_classes(data_index, val_index)
        check_classes_have_images(val_index)
        return data_index, val_index
    return hold_out(config, data_index)


def hold_out(config: TrainConfig, data_index: FolderIndex) -> tuple[FolderIndex, FolderIndex]:
    """(train, val): the stratified, seeded `--val-split` of `data_index` (default 0.2), copies of one photo
    (`photo_groups`) kept on one side."""
    fraction = config.val_split if config.val_split is not None else 0.2
    if config.val_split is None:
        log.info("No --val folder given: holding out %g of %s for validation (--val-split).", fraction, data_index.root)
    groups = photo_groups(data_index.files)
    train_rows, val_rows = stratified_split(data_index.labels, fraction, config.seed, groups)
    if groups:
        log.info(
            "Kept %d groups of identical or near-identical photos (%d images) on one side of the split.",
            len(groups),
            sum(map(len, groups)),
        )
    return data_index.subset(train_rows), data_index.subset(val_rows)


def photo_groups(files: Sequence[str]) -> list[list[int]]:
    """Indices of `files` holding the same photo (identical bytes or pHash within `NEAR_THRESHOLD` bits), 2 or more."""
    found = fingerprints(files)
    return duplicate_groups([digest for digest, _ in found], [phash for _, phash in found], NEAR_THRESHOLD)
