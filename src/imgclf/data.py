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


def _walk_sorted(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """Yield (directory, sorted file names) depth-first in sorted order, never entering hidden folders."""
    for directory, subfolders, file_names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not _is_hidden(d) and d not in IGNORED_FOLDERS)
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
    for label, class_name in enumerate(class_names):
        for directory, file_names in _walk_sorted(root / class_name):
            for name in file_names:
                if _is_hidden(name):
                    index.skipped_hidden += 1
                elif not is_image_file(name):
                    index.skipped_not_image += 1
                else:
                    index.files.append(str(directory / name))
                    index.labels.append(label)
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
                for directory, names in _walk_sorted(path)
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
    if min(counts) == 0 or max(counts) > 3 * min(counts):
        pairs = dict(zip(index.class_names, counts))
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
    the cache.
    """
    size = preprocessing.image_size

    def decode(path: str) -> tuple[torch.Tensor | SkippedFile, bool]:
        result = read_or_skip(path, preprocessing, cache)
        if on_image is not None:
            on_image()
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(decode, files))
    results = [result for result, _ in decoded]
    kept = [i for i, result in enumerate(results) if isinstance(result, torch.Tensor)]
    images = torch.empty((len(kept), 3, size, size), dtype=torch.uint8)
    for row, i in enumerate(kept):
        images[row] = results[i]
    skipped = [result for result in results if isinstance(result, SkippedFile)]
    return images, kept, skipped, sum(cached for _, cached in decoded)


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
    many were read and how many decoded is logged once (streaming: after the first complete pass).
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
            self._log_cache_use(self.decoded.cache_hits, len(index.files))

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
        cache_hits = 0
        for indices, (images, labels, ok, reasons, cached) in zip(plan, loader):
            for position in (~ok).nonzero().flatten().tolist():
                self._skip(self.index.files[indices[position]], reasons[position])
            cache_hits += int(cached.sum())
            if not ok.all():
                images, labels = images[ok], labels[ok]
                images = images.pin_memory() if self.pin_memory else images
            yield images, labels
        self._log_cache_use(cache_hits, sum(map(len, plan)))

    def _log_cache_use(self, cache_hits: int, loaded: int) -> None:
        if self.cache is not None and not self._cache_use_logged:
            self._cache_use_logged = True
            log.info(
                "Decoded-image cache %s: %d images of %s read from it, %d decoded.",
                self.cache.folder,
                cache_hits,
                self.index.root,
                loaded - cache_hits,
            )

    def _skip(self, path: str, reason: str) -> None:
        if all(item.path != path for item in self.skipped):
            log.warning("Skipped %s: %s", path, reason)
            self.skipped.append(SkippedFile(path, reason))


def split_folder(config: TrainConfig, data_index: FolderIndex) -> tuple[FolderIndex, FolderIndex]:
    """(train, val) for a run: DATA and the `--val` folder, or a stratified, seeded `--val-split` of DATA."""
    if config.val is not None:
        val_index = index_folder(config.val)
        check_same_classes(data_index, val_index)
        return data_index, val_index
    fraction = config.val_split if config.val_split is not None else 0.2
    if config.val_split is None:
        log.info("No --val folder given: holding out %g of %s for validation (--val-split).", fraction, config.data)
    train_rows, val_rows = stratified_split(data_index.labels, fraction, config.seed)
    return data_index.subset(train_rows), data_index.subset(val_rows)


def validation_index(config: TrainConfig) -> FolderIndex:
    """The validation images a run was trained with (its `--val` folder or its `--val-split` of DATA)."""
    return split_folder(config, index_folder(config.data))[1]
