"""Folder datasets with Keras `flow_from_directory` semantics, splits, and the two ways to feed images.

`DATA/<class>/**/<image>`: classes are the sorted sub-folder names. A small dataset is decoded once into a
uint8 tensor (`decode_images`); a large one streams from disk through DataLoader workers (`StreamingImages`).
Both are indexed by the same seeded `epoch_batches`, so they yield the same samples for the same seed, and
both read through the on-disk `DecodedCache` when given one.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from imgclf.config import ImgclfError, Preprocessing, TrainConfig
from imgclf.decoded_cache import DecodedCache
from imgclf.images import IMAGE_EXTENSIONS, ImageError, is_image_file, load_tensor

log = logging.getLogger(__name__)

IGNORED_FOLDERS = ("__MACOSX",)


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

    def class_counts(self) -> list[int]:
        counts = Counter(self.labels)
        return [counts.get(index, 0) for index in range(len(self.class_names))]

    def subset(self, indices: Sequence[int]) -> FolderIndex:
        return FolderIndex(
            self.root, self.class_names, [self.files[i] for i in indices], [self.labels[i] for i in indices]
        )


@dataclass
class SkippedFile:
    """A file left out of the run, and why."""

    path: str
    reason: str


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


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (train, val) keeping each class's share; the same seed gives the same split.

    Every class with at least two images keeps at least one in each part.
    """
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    train, val = [], []
    for label in np.unique(labels_array):
        members = np.flatnonzero(labels_array == label)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def imbalance_warning(index: FolderIndex) -> str | None:
    """A warning when the largest class has over 3× the images of the smallest, else None."""
    counts = index.class_counts()
    pairs = dict(zip(index.class_names, counts))
    if min(counts) == 0:
        empty = [name for name, count in pairs.items() if count == 0]
        return (
            f"Classes {empty} in {index.root} have no images ({pairs}); training refuses a class without images: "
            "add images to those folders or remove them."
        )
    if max(counts) > 3 * min(counts):
        return (
            f"Classes in {index.root} are imbalanced ({pairs}); consider --class-weight auto "
            "or adding images to the small classes."
        )
    return None


@dataclass
class DecodedImages:
    """Images decoded once into memory: uint8 `images` (N, 3, S, S) and their `labels`."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)
    cache_hits: int = 0


def load_or_skip(path: str, preprocessing: Preprocessing) -> torch.Tensor | SkippedFile:
    """`load_tensor`, or the `SkippedFile` saying why `path` cannot be read."""
    return read_or_skip(path, preprocessing, None)[0]


def read_or_skip(
    path: str, preprocessing: Preprocessing, cache: DecodedCache | None
) -> tuple[torch.Tensor | SkippedFile, bool]:
    """`load_or_skip` through the decoded-image `cache` when there is one, and whether the image came from it."""
    try:
        return cache.load(path) if cache is not None else (load_tensor(path, preprocessing), False)
    except ImageError as error:
        return SkippedFile(path, error.reason), False


def decode_images(
    index: FolderIndex,
    preprocessing: Preprocessing,
    workers: int = 2,
    on_image: Callable[[], None] | None = None,
    cache: DecodedCache | None = None,
) -> DecodedImages:
    """Decode every image of `index` at the model's input size; unreadable files are listed in `skipped`."""
    images, kept, skipped, cache_hits = decode_files(index.files, preprocessing, workers, on_image, cache)
    return DecodedImages(
        images=images,
        labels=torch.tensor([index.labels[i] for i in kept], dtype=torch.long),
        files=[index.files[i] for i in kept],
        skipped=skipped,
        cache_hits=cache_hits,
    )


def decode_files(
    files: Sequence[str],
    preprocessing: Preprocessing,
    workers: int = 2,
    on_image: Callable[[], None] | None = None,
    cache: DecodedCache | None = None,
) -> tuple[torch.Tensor, list[int], list[SkippedFile], int]:
    """Decode `files` on `workers` threads, through `cache` when given.

    Returns the readable ones as uint8 (N, 3, S, S), their positions, the skipped, and how many came from
    the cache. The threads write each image straight into one tensor, so the peak memory is about the size
    of the images (what `memory_needed_mb` estimates), never twice that.
    """
    size = preprocessing.image_size
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)

    def decode(i: int) -> tuple[SkippedFile | None, bool]:
        result, cached = read_or_skip(files[i], preprocessing, cache)
        if isinstance(result, torch.Tensor):
            images[i] = result
        if on_image is not None:
            on_image()
        return (result if isinstance(result, SkippedFile) else None), cached

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(decode, range(len(files))))
    kept = [i for i, (failure, _) in enumerate(outcomes) if failure is None]
    for row, i in enumerate(kept):
        if row != i:  # rows only move down (row < i), so no row is overwritten before it has moved
            images[row] = images[i]
    skipped = [failure for failure, _ in outcomes if failure is not None]
    return images[: len(kept)], kept, skipped, sum(cached for _, cached in outcomes)


def find_unreadable(
    index: FolderIndex, preprocessing: Preprocessing, workers: int = 2, cache: DecodedCache | None = None
) -> list[SkippedFile]:
    """Decode every file once and return those that fail (what `--strict` checks before streaming).

    Decoded pixels are dropped at once, so the check needs no more memory than streaming does; with a
    `cache`, the readable images are stored in it for the epochs that follow.
    """

    def failure(path: str) -> SkippedFile | None:
        result, _ = read_or_skip(path, preprocessing, cache)
        return result if isinstance(result, SkippedFile) else None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [item for item in pool.map(failure, index.files) if item is not None]


def memory_needed_mb(num_images: int, preprocessing: Preprocessing) -> float:
    """Megabytes an in-memory uint8 cache of `num_images` images takes."""
    return num_images * 3 * preprocessing.image_size**2 / 2**20


class StreamingImages(torch.utils.data.Dataset):
    """Decode images from disk on demand, through `cache` when given; an unreadable file yields a zero image.

    An item is (image, label, ok, reason why not ok, whether the image came from the cache).
    """

    def __init__(self, index: FolderIndex, preprocessing: Preprocessing, cache: DecodedCache | None = None):
        self.index = index
        self.preprocessing = preprocessing
        self.cache = cache

    def __len__(self) -> int:
        return len(self.index.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, str, bool]:
        result, cached = read_or_skip(self.index.files[i], self.preprocessing, self.cache)
        if isinstance(result, SkippedFile):
            size = self.preprocessing.image_size
            return torch.zeros((3, size, size), dtype=torch.uint8), self.index.labels[i], False, result.reason, False
        return result, self.index.labels[i], True, "", cached


def epoch_batches(num_images: int, batch_size: int, steps: int | None, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch, drawn from (seed, epoch) alone so a resumed run draws the same.

    Without `steps` it is one pass, the last batch possibly smaller. With `steps`, successive shuffled
    passes are concatenated and cut into `steps` full batches (the tutorial's 30 × 32 over 160 images).
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if steps is None:
        order = torch.randperm(num_images, generator=generator).tolist()
        return [order[start : start + batch_size] for start in range(0, num_images, batch_size)]
    needed = steps * batch_size
    order: list[int] = []
    while len(order) < needed:
        order.extend(torch.randperm(num_images, generator=generator).tolist())
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(steps)]


def sequential_batches(num_images: int, batch_size: int) -> list[list[int]]:
    """Every image once, in order: the batches of a validation pass."""
    return [list(range(start, min(start + batch_size, num_images))) for start in range(0, num_images, batch_size)]


class BatchSource:
    """Yields (uint8 images, labels) for lists of indices, from memory or streamed through DataLoader workers.

    With a decoded-image `cache`, images are read from it where present and stored in it otherwise; how
    many were read, decoded and unreadable is logged once (streaming: as the first pass's last batch is yielded).
    `pin_memory` (for a GPU) yields batches in page-locked memory, which copies to the GPU asynchronously.
    """

    holds_features = False

    def __init__(
        self,
        index: FolderIndex,
        preprocessing: Preprocessing,
        in_memory: bool,
        workers: int,
        cache: DecodedCache | None = None,
        pin_memory: bool = False,
    ):
        self.index = index
        self.preprocessing = preprocessing
        self.workers = workers
        self.cache = cache
        self.pin_memory = pin_memory
        self.decoded: DecodedImages | None = None
        self.skipped: list[SkippedFile] = []
        self._cache_use_logged = False
        if in_memory:
            self.decoded = decode_images(index, preprocessing, workers, cache=cache)
            self.skipped = list(self.decoded.skipped)
            self._log_cache_use(self.decoded.cache_hits, len(self.decoded.files), len(self.decoded.skipped))
        elif cache is not None:
            cache.check_writable()  # before DataLoader workers copy the cache, so a failure is warned about once

    def __len__(self) -> int:
        return len(self.decoded.files) if self.decoded is not None else len(self.index.files)

    @property
    def labels(self) -> list[int]:
        return self.decoded.labels.tolist() if self.decoded is not None else list(self.index.labels)

    @property
    def files(self) -> list[str]:
        return self.decoded.files if self.decoded is not None else list(self.index.files)

    def batches(self, plan: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.decoded is not None:
            for indices in plan:
                rows = torch.tensor(indices)
                images = self.decoded.images[rows]
                yield images.pin_memory() if self.pin_memory else images, self.decoded.labels[rows]
            return
        loader = torch.utils.data.DataLoader(
            StreamingImages(self.index, self.preprocessing, self.cache),
            batch_sampler=plan,
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=self.pin_memory,
        )
        cache_hits = loaded = unreadable = 0
        for number, (indices, (images, labels, ok, reasons, cached)) in enumerate(zip(plan, loader), start=1):
            for position in (~ok).nonzero().flatten().tolist():
                self._skip(self.index.files[indices[position]], reasons[position])
            cache_hits += int(cached.sum())
            loaded += int(ok.sum())
            unreadable += int((~ok).sum())
            if not ok.all():
                images, labels = images[ok], labels[ok]
                images = images.pin_memory() if self.pin_memory else images
            if number == len(plan):  # the engine's zip() never resumes this generator after its last batch
                self._log_cache_use(cache_hits, loaded, unreadable)
            yield images, labels

    def _log_cache_use(self, cache_hits: int, loaded: int, unreadable: int) -> None:
        """Log once how many of the `loaded` images came from the cache, and how many files were unreadable."""
        if self.cache is not None and not self._cache_use_logged:
            self._cache_use_logged = True
            log.info(
                "Decoded-image cache %s: %d images of %s read from it, %d decoded%s.",
                self.cache.folder,
                cache_hits,
                self.index.root,
                loaded - cache_hits,
                f", {unreadable} unreadable" if unreadable else "",
            )

    def _skip(self, path: str, reason: str) -> None:
        if all(item.path != path for item in self.skipped):
            log.warning("Skipped %s: %s", path, reason)
            self.skipped.append(SkippedFile(path, reason))


def split_folder(config: TrainConfig, data_index: FolderIndex) -> tuple[FolderIndex, FolderIndex]:
    """(train, val) for a run: DATA and the `--val` folder, or a stratified, seeded `--val-split` of DATA.

    Raises `DatasetError` when the folders' classes differ or a class folder of either holds no images.
    """
    check_classes_have_images(data_index)
    if config.val is not None:
        val_index = index_folder(config.val)
        check_same_classes(data_index, val_index)
        check_classes_have_images(val_index)
        return data_index, val_index
    fraction = config.val_split if config.val_split is not None else 0.2
    if config.val_split is None:
        log.info("No --val folder given: holding out %g of %s for validation (--val-split).", fraction, config.data)
    train_rows, val_rows = stratified_split(data_index.labels, fraction, config.seed)
    return data_index.subset(train_rows), data_index.subset(val_rows)


def validation_index(config: TrainConfig) -> FolderIndex:
    """The validation images a run was trained with (its `--val` folder or its `--val-split` of DATA)."""
    return split_folder(config, index_folder(config.data))[1]
