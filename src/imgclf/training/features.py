"""An on-disk cache of a frozen backbone's features, so a head trains on them without running the backbone.

Each image's features are stored once, under a key made of the file's content hash, the model name, its
starting weights and its whole preprocessing: an edited photo, another backbone, another input size or
another resize mode (a crop run and a squash run) never reuses stale features. The folder is
`$IMGCLF_CACHE/features` (default `~/.cache/imgclf/features`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from imgclf.config import Preprocessing
from imgclf.data.folders import FolderIndex, SkippedFile
from imgclf.data.images import DECODE_VERSION, normalize
from imgclf.data.loading import load_or_skip
from imgclf.devices import CPU
from imgclf.files import cache_dir, save_tensors
from imgclf.models.folding import check_batch, fold_if_exact
from imgclf.training.frozen import AGREEMENT, Backbone, agreement, fastest_backbone

log = logging.getLogger(__name__)

CHUNK = 64
"""Images decoded together, then run through the extractor together (about 0.15 MB each at 224 px)."""


def cache_root() -> Path:
    """Where cached features live: `$IMGCLF_CACHE/features`, else `~/.cache/imgclf/features`."""
    return cache_dir("features")


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digest_or_skip(path: str) -> str | SkippedFile:
    """`file_digest`, or why the file cannot be read (a broken link, say)."""
    try:
        return file_digest(path)
    except FileNotFoundError:
        return SkippedFile(path, "no such file")
    except OSError as error:
        return SkippedFile(path, f"cannot be read ({error.strerror or error})")


def backbone_key(
    model: str, weights: str, preprocessing: Preprocessing, extractor: nn.Module, precision: torch.dtype | None
) -> str:
    """A short, stable name for (model, starting weights, preprocessing, decoding, extractor layers, autocast
    precision)."""
    identity = json.dumps(
        [model, weights, dataclasses.asdict(preprocessing), DECODE_VERSION, repr(extractor), str(precision)],
        sort_keys=True,
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class FeatureCache:
    """Features of single images, one safetensors file per image content hash."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.writable = True

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, digest: str) -> torch.Tensor | None:
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            return load_file(path)["features"]
        except Exception:  # a damaged entry is recomputed, never trusted
            return None

    def has(self, digest: str) -> bool:
        """Whether features of the image with this content hash are stored (read or not)."""
        return self._path(digest).is_file()

    def remove(self, digest: str) -> None:
        """Forget one image's features, so they are computed again when next asked for."""
        try:
            self._path(digest).unlink(missing_ok=True)
        except NotADirectoryError:  # a file where the cache folder should be: it holds no features
            pass
        except OSError as error:
            log.warning("Cannot remove %s from the feature cache (%s).", self._path(digest), error)

    def put(self, digest: str, features: torch.Tensor) -> None:
        """Store one image's features; a cache folder that cannot be written is warned about once, then left."""
        if not self.writable:
            return
        try:
            # Not fsynced: a cache entry lost in a crash is only computed again (the rename still keeps it whole).
            save_tensors(self._path(digest), {"features": features}, durable=False)
        except OSError as error:
            self.writable = False
            log.warning("Cannot write the feature cache %s (%s); extracting without storing.", self.folder, error)


def _extraction_backbones(
    extractor: nn.Module,
    preprocessing: Preprocessing,
    cache: FeatureCache,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    images: int,
) -> tuple[Backbone | None, Backbone]:
    """`extractor` on OpenVINO when worthwhile and in agreement on the check batch (else None), and in PyTorch
    with its BatchNorms folded, channels-last, in `autocast_dtype` when given."""
    check = check_batch(preprocessing.image_size, device)
    fast = fastest_backbone(extractor, check, cache.folder / "backbone.onnx", autocast_dtype is None, images)
    folded = fold_if_exact(extractor, check)
    autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None)

    def run_torch(batch: torch.Tensor) -> torch.Tensor:
        with autocast:
            return folded(batch.contiguous(memory_format=torch.channels_last)).float()

    return fast, run_torch


@torch.inference_mode()
def _run_in_batches(
    backbone: Backbone, images: list[torch.Tensor], preprocessing: Preprocessing, batch_size: int, device: torch.device
) -> list[torch.Tensor]:
    """The features of each of `images` (uint8, (3, S, S)), computed `batch_size` at a time."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(images[start : start + batch_size]).to(device, non_blocking=True)
        outputs.append(backbone(normalize(batch, preprocessing)).cpu())
    return [row for output in outputs for row in output]


@dataclasses.dataclass
class View:
    """One backbone's features of the files at `rows` (positions in the files extracted): of the images as
    decoded, or of their mirrors (`mirrored`, flipped left to right), each stored in `cache` as it comes.

    `extract_views` fills `features` (position → features) with those of the readable files.
    """

    cache: FeatureCache
    rows: Sequence[int]
    mirrored: bool = False
    features: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Job:
    """One extractor's part of an extraction: its views, the rows each of them misses, and its engines."""

    fast: Backbone | None
    pytorch: Backbone
    views: Sequence[View]
    missing: list[set[int]]

    def forget(self, digests: list[str | SkippedFile]) -> int:
        """Drop the features this extraction gave the views, from them and from their caches; returns how many."""
        forgotten = 0
        for view, missing in zip(self.views, self.missing):
            for i in missing:
                if view.features.pop(i, None) is not None:
                    view.cache.remove(digests[i])
                    forgotten += 1
        return forgotten


@dataclasses.dataclass
class _Extraction:
    """One `extract_views` call: the files, their digests, how batches run, and the files found unreadable."""

    files: Sequence[str]
    digests: list[str | SkippedFile]
    preprocessing: Preprocessing
    batch_size: int
    device: torch.device
    unreadable: dict[int, SkippedFile] = dataclasses.field(default_factory=dict)

    def run(self, jobs: list[_Job]) -> None:
        """Fill the jobs' views with the features they miss (cached as they come).

        A job's `fast` engine (OpenVINO) gives its features while it agrees with its `pytorch` one: a chunk's are
        cached only once one of its images, run again in PyTorch, agrees with them. At the first chunk that
        disagrees, the job's caches forget every feature `fast` gave in this call, and `pytorch` extracts them all
        after the other jobs are done.
        """
        failed = self._chunks(jobs, use_fast=True)
        for job, (file, similarity) in failed:
            log.warning(
                "Extracting features with PyTorch: OpenVINO's differ from PyTorch's on %s (cosine %.3f); "
                "its %d features so far are recomputed.",
                file,
                similarity,
                job.forget(self.digests),
            )
        if failed:
            self._chunks([job for job, _ in failed], use_fast=False)

    def _chunks(self, jobs: list[_Job], use_fast: bool) -> list[tuple[_Job, tuple[str, float]]]:
        """Decoding and the jobs' engines taking turns on `CHUNK` files at a time, each file decoded once for all
        the jobs and each chunk's features cached; returns the jobs whose `fast` engine failed a spot check (then
        left for the rest), with the file and cosine."""
        wanted = sorted(set().union(*(missing for job in jobs for missing in job.missing)) - self.unreadable.keys())
        chunks = [wanted[start : start + CHUNK] for start in range(0, len(wanted), CHUNK)]
        active, failed = list(jobs), []

        def decode(i: int) -> torch.Tensor | SkippedFile:
            return load_or_skip(self.files[i], self.preprocessing)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            decoding = pool.map(decode, chunks[0]) if chunks else None
            for number, chunk in enumerate(chunks):
                decoded = {}
                for i, image in zip(chunk, decoding):
                    if isinstance(image, SkippedFile):
                        self.unreadable[i] = image
                    else:
                        decoded[i] = image
                results = []
                for job in list(active):
                    outcome = self._run_job(job, decoded, number, use_fast)
                    if isinstance(outcome, tuple):
                        failed.append((job, outcome))
                        active.remove(job)
                    else:
                        results += outcome
                if not active:
                    break
                if number + 1 < len(chunks):
                    decoding = pool.map(decode, chunks[number + 1])  # alongside the cache writes below
                for view, i, row in results:
                    view.features[i] = row.clone()  # not a view that keeps its whole batch alive
                    view.cache.put(self.digests[i], view.features[i])
        return failed

    def _run_job(
        self, job: _Job, decoded: dict[int, torch.Tensor], number: int, use_fast: bool
    ) -> list[tuple[View, int, torch.Tensor]] | tuple[str, float]:
        """The job's features of the `decoded` images its views miss (mirrored for a mirrored view), as (view,
        position, features); with its `fast` engine, after a spot check, or the file and cosine that failed it."""
        wanted = [(view, i) for view, missing in zip(job.views, job.missing) for i in decoded if i in missing]
        pixels = [decoded[i].flip(-1) if view.mirrored else decoded[i] for view, i in wanted]
        backbone = job.fast if use_fast and job.fast is not None else job.pytorch
        features = _run_in_batches(backbone, pixels, self.preprocessing, self.batch_size, self.device)
        if backbone is not job.pytorch and wanted:
            position = number % len(wanted)  # a different place in the batches for each chunk
            similarity = self._spot_check(job.pytorch, pixels[position], features[position])
            if similarity < AGREEMENT:
                return self.files[wanted[position][1]], similarity
        return [(view, i, row) for (view, i), row in zip(wanted, features)]

    @torch.inference_mode()
    def _spot_check(self, reference: Backbone, image: torch.Tensor, features: torch.Tensor) -> float:
        """The cosine between `features` and `reference`'s features of `image` (uint8, (3, S, S))."""
        # torch.set_num_threads(1) here made checks faster on a busy machine, but it is process-wide and not safe
        # while the decoding threads beside it run PyTorch ops.
        expected = reference(normalize(image[None].to(self.device), self.preprocessing)).cpu()
        return agreement(expected, features[None])


def extract_views(
    extractors: Sequence[tuple[nn.Module, Sequence[View]]],
    files: Sequence[str],
    preprocessing: Preprocessing,
    batch_size: int = 8,
    device: torch.device = CPU,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[list[SkippedFile], list[int]]:
    """Fill each extractor's `View`s of `files` from their caches where present, else by running it (and caching).

    Each file missing from any view is decoded once, and every extractor that misses it runs on that decoded
    image, or on its mirror (`torch.flip`) for a mirrored view: one pass over the files feeds several backbones,
    as `--preset balanced|best` needs. Each extractor runs as `extract_features` describes, on OpenVINO (exported
    once, into the folder of its first view's cache) or in PyTorch.

    Returns the unreadable files and how many images each extractor had to run on (0: all came from the cache).
    """
    digests = [_digest_or_skip(path) for path in files]
    skipped = [digest for digest in digests if isinstance(digest, SkippedFile)]
    jobs, computed = [], []
    for extractor, views in extractors:
        for view in views:
            view.features = {i: view.cache.get(digests[i]) for i in view.rows if isinstance(digests[i], str)}
        missing = [{i for i, features in view.features.items() if features is None} for view in views]
        computed.append(sum(map(len, missing)))
        if computed[-1]:  # before any decoding: a decode thread's `catch_warnings` would undo the export's filter
            fast, pytorch = _extraction_backbones(
                extractor, preprocessing, views[0].cache, device, autocast_dtype, computed[-1]
            )
            jobs.append(_Job(fast, pytorch, views, missing))
    if jobs:
        extraction = _Extraction(files, digests, preprocessing, batch_size, device)
        extraction.run(jobs)
        skipped += [extraction.unreadable[i] for i in sorted(extraction.unreadable)]
        asked = sum(len(view.rows) for _, views in extractors for view in views)
        log.info("Computed features of %d images; %d came from the cache.", sum(computed), asked - sum(computed))
    for _, views in extractors:
        for view in views:
            view.features = {i: features for i, features in view.features.items() if features is not None}
    return skipped, computed


def extract_features(
    extractor: nn.Module,
    files: Sequence[str],
    preprocessing: Preprocessing,
    cache: FeatureCache,
    batch_size: int = 8,
    device: torch.device = CPU,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, list[int], list[SkippedFile], int]:
    """Features for `files`, from the cache where present, else by running `extractor` (and caching).

    Returns (features of the readable files, their positions in `files`, the unreadable files, how many
    images went through the extractor). The extractor runs on OpenVINO when `frozen.fastest_backbone` finds it
    installed, worthwhile and in agreement (the export is kept in the cache's folder), else in PyTorch with its
    BatchNorms folded (when that is exact), channels-last, in `autocast_dtype` when given. OpenVINO's features
    are cached only where they agree with PyTorch's on the photos themselves (`_Extraction.run`): a check batch
    of noise does not show every way an engine can go wrong.

    Decoding and the extractor take turns, `CHUNK` images at a time, each with every core: side by side on
    2 cores they slowed each other down more than they overlapped (Lite0 on OpenVINO, 1,000 photos: 143–149
    img/s in turns, 113–119 side by side).
    """
    view = View(cache, range(len(files)))
    skipped, (computed,) = extract_views(
        [(extractor, [view])], files, preprocessing, batch_size, device, autocast_dtype
    )
    kept = sorted(view.features)
    stacked = torch.stack([view.features[i] for i in kept]) if kept else torch.empty(0)
    return stacked, kept, skipped, computed


class FeatureSource:
    """The cached features of a folder's images, served in batches as `data.BatchSource` serves images."""

    holds_features = True

    def __init__(
        self,
        index: FolderIndex,
        extractor: nn.Module,
        preprocessing: Preprocessing,
        cache: FeatureCache,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
    ):
        features, kept, self.skipped, _ = extract_features(
            extractor, index.files, preprocessing, cache, device=device, autocast_dtype=autocast_dtype
        )
        self.features = features
        self.label_tensor = torch.tensor([index.labels[i] for i in kept], dtype=torch.long)
        self.files = [index.files[i] for i in kept]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> list[int]:
        return self.label_tensor.tolist()

    def batches(self, plan: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices in plan:
            rows = torch.tensor(indices)
            yield self.features[rows], self.label_tensor[rows]
