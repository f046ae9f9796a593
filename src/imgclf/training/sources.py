"""Where a phase's batches come from: the images, decoded into memory or streamed, or a frozen backbone's features.

A frozen backbone without augmentation never needs to run twice on the same image: its features come from (or go
into) the on-disk feature cache (`features.py`) and only the head trains. With augmentation the backbone runs on
every batch, on OpenVINO when `frozen.fastest_backbone` finds that worthwhile. In several processes the first one
on each machine fills a cache, and the others then read it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgclf.config import Preprocessing, TrainConfig
from imgclf.data import folders, loading
from imgclf.data.decoded_cache import DecodedCache
from imgclf.devices import pins_memory
from imgclf.models.folding import check_batch
from imgclf.models.heads import fixed_prefix_length
from imgclf.training.distributed import Processes
from imgclf.training.features import FeatureCache, FeatureSource, backbone_key, cache_root, file_digest
from imgclf.training.frozen import Backbone, fastest_backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingInputs:
    """What every phase of a run is set up from: the options, the preprocessing, the split folders, and the
    processes and autocast precision (None: fp32) it trains with."""

    config: TrainConfig
    preprocessing: Preprocessing
    indexes: tuple[folders.FolderIndex, folders.FolderIndex]
    processes: Processes
    precision: torch.dtype | None

    @property
    def class_names(self) -> list[str]:
        return self.indexes[0].class_names


def image_sources(inputs: TrainingInputs) -> tuple[loading.BatchSource, loading.BatchSource]:
    """Decode the images into memory when they fit `--cache-mem`, else stream them; unreadable files are skipped.

    Both read decoded images from the on-disk `DecodedCache` and store the missing ones, unless `--no-decode-cache`;
    the first process on a machine then decodes, and the others read its cache.
    """
    config, preprocessing, (train_index, val_index) = inputs.config, inputs.preprocessing, inputs.indexes
    with inputs.processes.local_main_first() if config.decode_cache else contextlib.nullcontext():
        needed = loading.memory_needed_mb(len(train_index.files) + len(val_index.files), preprocessing)
        in_memory = needed <= config.cache_mem_mb
        log.info(
            "%s images (%.0f MB at %d×%d; --cache-mem %d MB).",
            "Decoding all" if in_memory else "Streaming",
            needed,
            preprocessing.image_size,
            preprocessing.image_size,
            config.cache_mem_mb,
        )
        cache = DecodedCache(preprocessing) if config.decode_cache else None
        if config.strict and not in_memory:
            unreadable = [
                *loading.find_unreadable(train_index, preprocessing, config.workers, cache),
                *loading.find_unreadable(val_index, preprocessing, config.workers, cache),
            ]
            _fail_if_unreadable(unreadable)
        pin_memory = pins_memory(inputs.processes.device)
        train = loading.BatchSource(train_index, preprocessing, in_memory, config.workers, cache, pin_memory)
        val = loading.BatchSource(val_index, preprocessing, in_memory, config.workers, cache, pin_memory)
    return train, val


def split_frozen(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A backbone model as its frozen start (the backbone and the head's parameter-free start) and the rest."""
    prefix = fixed_prefix_length(model.head)
    return nn.Sequential(model.backbone, *model.head[:prefix]), model.head[prefix:]


def feature_sources(inputs: TrainingInputs, extractor: nn.Module) -> tuple[FeatureSource, FeatureSource]:
    """The features `extractor` (a frozen start, see `split_frozen`) makes of the training and validation images,
    from the feature cache where present."""
    cache = FeatureCache(_backbone_folder(inputs, extractor))
    device, precision = inputs.processes.device, inputs.precision
    with inputs.processes.local_main_first():
        train, val = (
            FeatureSource(index, extractor, inputs.preprocessing, cache, device, precision) for index in inputs.indexes
        )
    return train, val


def frozen_backbone(inputs: TrainingInputs, extractor: nn.Module, train_images: int) -> Backbone | None:
    """`extractor` (a frozen start, see `split_frozen`) on OpenVINO, for a head phase that runs it on every
    augmented batch, when `frozen.fastest_backbone` finds that worthwhile; else None."""
    config = inputs.config
    with inputs.processes.local_main_first():
        onnx_path = _backbone_folder(inputs, extractor) / "backbone.onnx"  # shared with the feature cache's extraction
        steps = config.steps_per_epoch or -(-train_images // config.batch_size)
        images = config.epochs * steps * config.batch_size
        check = check_batch(inputs.preprocessing.image_size, inputs.processes.device)
        return fastest_backbone(extractor, check, onnx_path, inputs.precision is None, images)


def _backbone_folder(inputs: TrainingInputs, extractor: nn.Module) -> Path:
    """The feature-cache folder of this backbone, starting weights, preprocessing and precision."""
    weights = file_digest(inputs.config.weights) if inputs.config.weights else "pretrained"
    return cache_root() / backbone_key(inputs.config.model, weights, inputs.preprocessing, extractor, inputs.precision)


def check_sources(
    train: loading.BatchSource | FeatureSource, val: loading.BatchSource | FeatureSource, strict: bool
) -> list[folders.SkippedFile]:
    """The files found unreadable so far; raise `DatasetError` under `--strict` if any, or if no image is left."""
    skipped = train.skipped + val.skipped
    if strict:
        _fail_if_unreadable(skipped)
    for name, source in (("training", train), ("validation", val)):
        if len(source) == 0:
            raise folders.DatasetError(f"No readable {name} images are left after skipping unreadable files.")
    return skipped


def _fail_if_unreadable(unreadable: list[folders.SkippedFile]) -> None:
    if unreadable:
        listing = "; ".join(f"{item.path}: {item.reason}" for item in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise folders.DatasetError(
            f"--strict: {len(unreadable)} unreadable image(s): {listing}{more}. Fix or remove them, "
            "or drop --strict to skip them."
        )
