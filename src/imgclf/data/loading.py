"""Feeding images to training: decoded once into memory, or streamed from disk, in seeded batches.

A small dataset is decoded once into a uint8 tensor (`decode_images`); a large one streams from disk through
DataLoader workers (`StreamingImages`). Both are indexed by the same seeded `epoch_batches`, so they yield the
same samples for the same seed, and both read through the on-disk `DecodedCache` when given one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from imgclf.config import Preprocessing
from imgclf.data.decoded_cache import DecodedCache
from imgclf.data.folders import SKIPPED_SHOWN, FolderIndex, SkippedFile
from imgclf.data.images import ImageError, load_tensor

log = logging.getLogger(__name__)


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
            if len(self.skipped) < SKIPPED_SHOWN:  # the rest are counted when the run is finished
                log.warning("Skipped %s: %s", path, reason)
            self.skipped.append(SkippedFile(path, reason))
