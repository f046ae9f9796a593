"""From the user's options to a run's config: check them, index the folders, read back a run to resume.

Everything here runs before the first training step, so that a mistake is one line before any work is done.
`run_config` describes the run for `config.json` once its data is read.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from imgclf.config import (
    AUGMENT_PRESETS,
    AugmentConfig,
    ConfigError,
    ImgclfError,
    Preprocessing,
    RunConfig,
    TrainConfig,
    validate,
)
from imgclf.data import folders
from imgclf.data.labels_csv import file_facts
from imgclf.data.run_data import split_data
from imgclf.devices import resolve_device, resolve_precision
from imgclf.models import get_spec
from imgclf.models.ensemble import PREFIX as ENSEMBLE_PREFIX
from imgclf.runs import RunError, read_config
from imgclf.training.budget import time_limit_seconds
from imgclf.training.checkpoints import read_state
from imgclf.training.finish import has_finished
from imgclf.training.phases import PhaseSetup, plan_phases
from imgclf.training.sources import TrainingInputs
from imgclf.training.tracking import check_installed

log = logging.getLogger(__name__)


def make_train_config(
    data: str | Path | None, augment: str | AugmentConfig = "none", images: str | Path | None = None, **options
) -> TrainConfig:
    """Build and validate a `TrainConfig` from keyword options; `augment` is a preset name or a config.

    With `labels` (a CSV), `images` is the folder its paths are relative to (default: the CSV's folder).
    """
    data = _images_folder(data, images, options.get("labels"))
    if isinstance(augment, str):
        if augment not in AUGMENT_PRESETS:
            raise ImgclfError(
                f"Unknown augmentation. Received: --augment={augment!r}. Choose one of {sorted(AUGMENT_PRESETS)}."
            )
        augment = AUGMENT_PRESETS[augment]
    if data is None:
        raise ImgclfError("No data folder given. Give DATA, a folder with one sub-folder per class, or --labels CSV.")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ImgclfError(f"Unknown training options {unknown}. Known options: {sorted(fields - {'augment'})}.")
    if type(options.get("time_limit")) in (int, float):  # seconds, from Python
        options["time_limit"] = f"{options['time_limit']:g}s"
    config = validate(TrainConfig(data=str(data), augment=augment, **options))
    time_limit_seconds(config.time_limit)
    if config.model.startswith(ENSEMBLE_PREFIX):
        raise ConfigError(
            f"An ensemble is what --preset balanced or best chooses and trains. Received: --model={config.model}. "
            "Give --preset best (or balanced) instead.",
            "--model",
        )
    _check_preset_options(config)
    if config.fine_tune is not None and not get_spec(config.model).backbone:
        raise ConfigError(
            f"{config.model} is trained from scratch, so every layer already trains: --fine-tune is for a "
            f"pretrained backbone. Received: --fine-tune={config.fine_tune}. Drop it, or use a backbone such as "
            "efficientnet_lite0."
        )
    return config


def _images_folder(data: str | Path | None, images: str | Path | None, labels: str | Path | None) -> str | Path | None:
    """DATA: the folder of class sub-folders, or the `labels` CSV's `images` folder (default the CSV's own)."""
    if images is not None and labels is None:
        raise ImgclfError(f"--images names the folder of a labels CSV. Received: --images={images}. Add --labels CSV.")
    if labels is None:
        return data
    if data is not None and images is not None:
        raise ImgclfError(
            f"Give the images folder once. Received: DATA={data} and --images={images}. Drop DATA, keep --images."
        )
    return data if data is not None else images if images is not None else Path(labels).parent


PRESET_CHOOSES = (
    "model",
    "image_size",
    "head",
    "weights",
    "fine_tune",
    "fine_tune_epochs",
    "fine_tune_lr",
    "augment",
    "feature_cache",
    "optimizer",
    "lr",
    "epochs",
    "steps_per_epoch",
    "patience",
    "class_weight",
    "track",
)
"""Options that `--preset balanced|best` decides itself (or has no use for): giving them as well is an error."""


def _check_preset_options(config: TrainConfig) -> None:
    if config.preset == "fast":
        return
    defaults = TrainConfig(data=config.data)
    given = [name for name in PRESET_CHOOSES if getattr(config, name) != getattr(defaults, name)]
    if given:
        option = f"--{given[0].replace('_', '-')}"
        raise ConfigError(
            f"--preset {config.preset} chooses the model and how it trains itself. Received: --preset="
            f"{config.preset} with {option}={getattr(config, given[0])}. Drop {option}, or use --preset fast.",
            option,
        )


def resumed_config(run_dir: str | Path, **options) -> tuple[RunConfig, TrainConfig, dict]:
    """What `--resume run_dir` continues: the saved run config, its training options with `options` applied, and
    the state of its last saved epoch. Raises `RunError` when there is no saved epoch, or when the run is
    finished and has no epoch left to train (one stopped after its last epoch, before it was finished, is
    resumed to finish it)."""
    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    config = validate(dataclasses.replace(saved.train, **options))
    state = read_state(run_dir)
    last_epoch = plan_phases(config, get_spec(config.model).backbone)[-1].last_epoch
    if state["epoch"] >= last_epoch and has_finished(run_dir):
        raise RunError(
            f"{run_dir} has already trained {state['epoch']} epoch{'s' if state['epoch'] != 1 else ''}. "
            f"Received: --epochs={config.epochs}"
            + (f", --fine-tune-epochs={config.fine_tune_epochs}" if config.fine_tune is not None else "")
            + ". Give more epochs in all to train on, or use the run as it is."
        )
    return saved, config, state


def run_preprocessing(config: TrainConfig, model_default: Preprocessing) -> Preprocessing:
    """The model's preprocessing with the run's `--image-size`, `--resize` and `--pad-color`."""
    return dataclasses.replace(
        model_default,
        image_size=config.image_size or model_default.image_size,
        resize=config.resize,
        pad_color=config.pad_color,
    )


def with_multi_label(config: TrainConfig, train_index: folders.FolderIndex) -> TrainConfig:
    """`config`, made multi-label when its CSV's label cells hold several labels (saved so in `config.json`)."""
    if not train_index.multi_label or config.multi_label:
        return config
    log.info("%s holds images with several labels: training multi-label (one sigmoid per label).", config.labels)
    return validate(dataclasses.replace(config, multi_label=True))


def warn_if_labels_changed(config: TrainConfig, saved: RunConfig) -> None:
    """Warn when a resumed run's labels CSV is not the one it started with (another SHA-256)."""
    started_with = saved.dataset.get("labels_sha256")
    if config.labels is not None and started_with is not None:
        now = file_facts(config.labels)
        if now["labels_sha256"] != started_with:
            log.warning(
                "%s has changed since the run started (%s rows then, %s now): the resumed epochs train on its rows "
                "as they are now.",
                config.labels,
                saved.dataset.get("labels_rows"),
                now["labels_rows"],
            )


def check_before_training(config: TrainConfig) -> None:
    """Raise the errors that `train` would raise on `config` before its first step: device, precision, folders,
    a missing tracker.

    `imgclf train --nproc N` checks here once, rather than have N processes start and each say the same.
    """
    resolve_precision(config.precision, resolve_device(config.device))
    split_data(config)
    check_installed(config.track)


def index_data(config: TrainConfig, warn: bool = True) -> tuple[folders.FolderIndex, folders.FolderIndex]:
    """Index and split the run's folders, saying what was found (Keras's `Found N images ...`).

    `warn`: whether to warn when the validation folder overlaps the training folder (in several processes only
    the main one does). Imbalanced classes are warned of once the unreadable images are known (see `loop.py`).
    """
    train_index, val_index = split_data(config)
    log.info("Training: %s", folders.describe(train_index))
    log.info("Validation: %s", folders.describe(val_index))
    warning = folders.overlap_warning(config.data, config.val) if warn and config.val is not None else None
    if warning is not None:
        log.warning(warning)
    return train_index, val_index


def run_config(inputs: TrainingInputs, setup: PhaseSetup, skipped: list[folders.SkippedFile]) -> RunConfig:
    """What `config.json` says of a run: its options, classes and preprocessing, the data its first phase
    found (`skipped`: the unreadable files), the library versions and the hardware."""
    train_index, val_index = inputs.indexes
    dataset = {
        "train_root": train_index.root,
        "val_root": val_index.root,
        "train_count": len(setup.train),
        "val_count": len(setup.val),
        "train_class_counts": train_index.class_counts(),
        "val_class_counts": val_index.class_counts(),
        "skipped": len(skipped),
        "in_memory": setup.train.holds_features or setup.train.decoded is not None,
        "features_cached": setup.train.holds_features,
        **(file_facts(inputs.config.labels) if inputs.config.labels is not None else {}),
    }
    hardware = {
        "device": inputs.processes.device.type,
        "processes": inputs.processes.world_size,
        "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(inputs.precision, "fp32"),
        "threads": torch.get_num_threads(),
    }
    return RunConfig(inputs.config, inputs.class_names, inputs.preprocessing, library_versions(), dataset, hardware)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("imgclf", "torch", "torchvision", "timm", "pillow", "numpy", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
