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
from imgclf.training.frozen import Backbone, fastest_backbone

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


def _extraction_backbone(
    extractor: nn.Module,
    preprocessing: Preprocessing,
    cache: FeatureCache,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    images: int,
) -> Backbone:
    """`extractor` on OpenVINO when worthwhile and in agreement, else in PyTorch with its BatchNorms folded."""
    check = check_batch(preprocessing.image_size, device)
    fast = fastest_backbone(extractor, check, cache.folder / "backbone.onnx", autocast_dtype is None, images)
    if fast is not None:
        return fast
    folded = fold_if_exact(extractor, check)
    autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None)

    def run_torch(batch: torch.Tensor) -> torch.Tensor:
        with autocast:
            return folded(batch.contiguous(memory_format=torch.channels_last)).float()

    return run_torch


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
    BatchNorms folded (when that is exact), channels-last, in `autocast_dtype` when given.

    Decoding and the extractor take turns, `CHUNK` images at a time, each with every core: side by side on
    2 cores they slowed each other down more than they overlapped (Lite0 on OpenVINO, 1,000 photos: 143–149
    img/s in turns, 113–119 side by side).
    """
    digests = [_digest_or_skip(path) for path in files]
    skipped = [digest for digest in digests if isinstance(digest, SkippedFile)]
    found = {i: cache.get(digest) for i, digest in enumerate(digests) if isinstance(digest, str)}
    missing = [i for i, features in found.items() if features is None]
    chunks = [missing[start : start + CHUNK] for start in range(0, len(missing), CHUNK)]

    def decode(i: int) -> torch.Tensor | SkippedFile:
        return load_or_skip(files[i], preprocessing)

    if missing:  # before any decoding: a decode thread's `catch_warnings` would undo the export's warning filter
        backbone = _extraction_backbone(extractor, preprocessing, cache, device, autocast_dtype, len(missing))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoding = pool.map(decode, chunks[0]) if chunks else None
        for number, chunk in enumerate(chunks):
            images = list(decoding)
            good = [(i, image) for i, image in zip(chunk, images) if isinstance(image, torch.Tensor)]
            skipped += [image for image in images if isinstance(image, SkippedFile)]
            features = _run_in_batches(backbone, [image for _, image in good], preprocessing, batch_size, device)
            if number + 1 < len(chunks):
                decoding = pool.map(decode, chunks[number + 1])  # alongside the cache writes below
            for (i, _), row in zip(good, features):
                found[i] = row.clone()  # not a view that keeps its whole batch alive
                cache.put(digests[i], found[i])
    kept = [i for i in range(len(files)) if found.get(i) is not None]
    if len(missing):
        log.info("Computed features of %d images; %d came from the cache.", len(missing), len(files) - len(missing))
    stacked = torch.stack([found[i] for i in kept]) if kept else torch.empty(0)
    return stacked, kept, skipped, len(missing)


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
