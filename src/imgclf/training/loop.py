"""Training: data, model, optimiser, loop, validation, checkpoints — read top to bottom.

imgclf train data/training_set --val data/val_set --model seed-cnn --augment seed --epochs 30 --steps-per-epoch 30
imgclf.train("data/training_set", val="data/val_set", model="seed-cnn", augment="seed", epochs=30, steps_per_epoch=30)

In several processes (DistributedDataParallel; `--batch-size` stays the global batch, see `distributed.py`):
torchrun --standalone --nproc-per-node 2 -m imgclf train data/training_set --val data/val_set --model seed-cnn
imgclf train data/training_set --val data/val_set --model seed-cnn --nproc 2
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
from imgclf.data import folders, loading
from imgclf.data.augment import augment
from imgclf.data.augment import describe as describe_augment
from imgclf.data.decoded_cache import DecodedCache
from imgclf.data.images import normalize
from imgclf.deploy.predictor import Run, load
from imgclf.devices import gradient_scaler, pins_memory, resolve_device, resolve_precision
from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import calibrated_probabilities, fit_temperature
from imgclf.evaluation.evaluate import evaluate_index, write_evaluation
from imgclf.evaluation.plots import plot_metric
from imgclf.evaluation.report import REPORT_FILE, write_report
from imgclf.files import atomic_write_text, interrupts_held, save_figure, save_tensors, write_csv, write_json
from imgclf.models import BuildOptions, create_model, get_spec, num_outputs, summarize, to_probabilities
from imgclf.models.folding import check_batch
from imgclf.models.heads import fixed_prefix_length
from imgclf.runs import CALIBRATION_FILE, CHECKPOINT_DIR, CONFIG_FILE, WEIGHTS_FILE, RunError, load_tensors, read_config
from imgclf.training import distributed
from imgclf.training.distributed import SINGLE_PROCESS, Processes
from imgclf.training.features import FeatureCache, FeatureSource, backbone_key, cache_root, file_digest
from imgclf.training.frozen import Backbone, fastest_backbone

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""Called as `progress(epoch, step, steps)` after every training step."""

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class TrainingInterrupted(ImgclfError):
    """Training stopped on Ctrl-C; the last complete epoch is saved and `--resume` continues from it."""

    exit_code = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)


def make_train_config(data: str | Path | None, augment: str | AugmentConfig = "none", **options) -> TrainConfig:
    """Build and validate a `TrainConfig` from keyword options; `augment` is a preset name or a config."""
    if isinstance(augment, str):
        if augment not in AUGMENT_PRESETS:
            raise ImgclfError(
                f"Unknown augmentation. Received: --augment={augment!r}. Choose one of {sorted(AUGMENT_PRESETS)}."
            )
        augment = AUGMENT_PRESETS[augment]
    if data is None:
        raise ImgclfError("No data folder given. Give DATA, a folder with one sub-folder per class.")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ImgclfError(f"Unknown training options {unknown}. Known options: {sorted(fields - {'augment'})}.")
    config = validate(TrainConfig(data=str(data), augment=augment, **options))
    if config.fine_tune is not None and not get_spec(config.model).backbone:
        raise ConfigError(
            f"{config.model} is trained from scratch, so every layer already trains: --fine-tune is for a "
            f"pretrained backbone. Received: --fine-tune={config.fine_tune}. Drop it, or use a backbone such as "
            "efficientnet_lite0."
        )
    return config


def index_data(config: TrainConfig, warn: bool = True) -> tuple[folders.FolderIndex, folders.FolderIndex]:
    """Index and split the run's folders, saying what was found (Keras's `Found N images ...`).

    `warn`: whether to warn of imbalanced classes (in several processes only the main one does).
    """
    data_index = folders.index_folder(config.data)
    if data_index.skipped_hidden or data_index.skipped_not_image or data_index.loose_files:
        log.info(
            "Passed over in %s: %d hidden files, %d non-image files, %d files outside class folders.",
            config.data,
            data_index.skipped_hidden,
            data_index.skipped_not_image,
            data_index.loose_files,
        )
    train_index, val_index = folders.split_folder(config, data_index)
    log.info("Training: %s", folders.describe(train_index))
    log.info("Validation: %s", folders.describe(val_index))
    if warn:
        warnings = [folders.imbalance_warning(train_index) if config.class_weight != "auto" else None]
        if config.val is not None:
            warnings.append(folders.overlap_warning(config.data, config.val))
        for warning in filter(None, warnings):
            log.warning(warning)
    return train_index, val_index


def image_sources(
    config: TrainConfig,
    preprocessing,
    train_index: folders.FolderIndex,
    val_index: folders.FolderIndex,
    pin_memory: bool = False,
) -> tuple[loading.BatchSource, loading.BatchSource]:
    """Decode the images into memory when they fit `--cache-mem`, else stream them; unreadable files are skipped.

    Both read decoded images from the on-disk `DecodedCache` and store the missing ones, unless `--no-decode-cache`.
    """
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
    train = loading.BatchSource(train_index, preprocessing, in_memory, config.workers, cache, pin_memory)
    val = loading.BatchSource(val_index, preprocessing, in_memory, config.workers, cache, pin_memory)
    return train, val


def _fail_if_unreadable(unreadable: list[folders.SkippedFile]) -> None:
    if unreadable:
        listing = "; ".join(f"{item.path}: {item.reason}" for item in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise folders.DatasetError(
            f"--strict: {len(unreadable)} unreadable image(s): {listing}{more}. Fix or remove them, "
            "or drop --strict to skip them."
        )


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """Adam, RMSprop (Keras's rho = 0.9 and epsilon = 1e-7) or SGD with momentum 0.9."""
    parameters = [p for p in parameters if p.requires_grad]
    # On a CPU the default updates one tensor at a time: 3.7 ms an Adam step for the seed-cnn against 1.1 ms.
    if name == "adam":
        # Fused: 0.3 ms. Its kernel ignores strides, so `_restore_optimizer` lays restored moments out as their weights.
        return torch.optim.Adam(parameters, lr=lr, eps=1e-7, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=0.9, eps=1e-7, foreach=True)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, foreach=True)


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, `total / (classes × count)`, so every class weighs the same in the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Binary cross-entropy for one logit, cross-entropy otherwise; per-class weights scale each sample."""
    if logits.shape[1] == 1:
        per_sample = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    else:
        per_sample = F.cross_entropy(logits, labels, reduction="none")
    if weights is not None:
        per_sample = per_sample * weights[labels]
    return per_sample.mean()


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices: logit > 0 for one logit (probability > 0.5), else the arg-max."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


@dataclass
class Step:
    """How every batch reaches the model: augmented and normalised images, or cached features for the head.

    `frozen`, when set, runs the frozen start of the model on the images (on another engine, see `frozen.py`)
    and `model` is then the head's trainable end.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    preprocessing: Preprocessing
    augment: AugmentConfig
    features: bool = False
    frozen: Backbone | None = None

    def forward(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits of `model` for a batch (of features: `model` is then the head's trainable end).

        `generator` (training only) draws the augmentation.
        """
        batch = batch.to(self.device, non_blocking=True)
        if self.features:
            return model(batch).float()
        inputs = augment(batch, self.augment, generator) if generator is not None else batch
        inputs = normalize(inputs, self.preprocessing)
        if self.frozen is not None:
            return model(self.frozen(inputs)).float()
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            return model(inputs).float()


def set_trainable_blocks(model: nn.Module, blocks: str | None) -> None:
    """Freeze a backbone model's backbone except its last `blocks` stages (`all`: nothing frozen, None: all)."""
    for parameter in model.backbone.parameters():
        parameter.requires_grad = blocks == "all"
    if blocks is not None and blocks != "all":
        for block in model.blocks[-int(blocks) :]:
            for parameter in block.parameters():
                parameter.requires_grad = True


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep the backbone's BatchNorm statistics as pretrained: small batches would only make them noisy."""
    for module in model.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, source: loading.BatchSource, step: Step, plan: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the images of `source` that `plan`'s batches list, in order (on the CPU)."""
    model.eval()
    logits, labels = [], []
    for batch, batch_labels in source.batches(plan):
        if len(batch_labels) == 0:  # streaming found every image of the batch unreadable
            continue
        logits.append(step.forward(model, batch).cpu())
        labels.append(batch_labels)
    if not logits:
        return torch.empty((0, 1)), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module, source: loading.BatchSource, step: Step, batch_size: int, processes: Processes = SINGLE_PROCESS
) -> tuple[float, float]:
    """Mean loss and accuracy over every image of `source`, each seen once.

    In several processes each scores every `world_size`-th batch, and the sums of loss, hits and images are
    added up over the processes: all of them get the same numbers.
    """
    plan = processes.take_turns(loading.sequential_batches(len(source), batch_size))
    logits, labels = predict_logits(model, source, step, plan)
    loss_sum = float(compute_loss(logits, labels, None)) * len(labels) if len(labels) else 0.0
    correct = int((predicted_labels(logits) == labels).sum())
    loss_sum, correct, count = processes.sum(loss_sum, correct, len(labels))
    return (loss_sum / count, correct / count) if count else (0.0, 0.0)


def calibrate(model: nn.Module, source: loading.BatchSource, step: Step, batch_size: int) -> dict:
    """Fit the temperature on the validation images; with the log-loss and ECE before and after."""
    logits, labels = predict_logits(model, source, step, loading.sequential_batches(len(source), batch_size))
    temperature = fit_temperature(logits, labels)
    before, after = to_probabilities(logits).numpy(), calibrated_probabilities(logits, temperature).numpy()
    return {
        "temperature": temperature,
        "images": len(labels),
        "val_log_loss_before": metrics.log_loss(labels.numpy(), before) if len(labels) else None,
        "val_log_loss_after": metrics.log_loss(labels.numpy(), after) if len(labels) else None,
        "val_ece_before": metrics.reliability(labels.numpy(), before)["ece"] if len(labels) else None,
        "val_ece_after": metrics.reliability(labels.numpy(), after)["ece"] if len(labels) else None,
    }


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    for parameter, parameter_state in optimizer.state.items():
        for key, value in parameter_state.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                # Saved contiguous, while conv weights are channels-last: `empty_like` takes the weight's strides.
                parameter_state[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def changing_state(model: nn.Module, phase: Phase) -> dict[str, torch.Tensor]:
    """The weights and buffers a phase can change: all of them from scratch; with a backbone, the trainable
    parameters and the head's buffers (the backbone's BatchNorm statistics stay frozen in both its phases)."""
    state = model.state_dict()
    if phase.name == "train":
        return state
    frozen = {f"backbone.{name}" for name, _ in model.backbone.named_buffers()}
    frozen |= {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    return {name: tensor for name, tensor in state.items() if name not in frozen}


def _save_phase_start(run_dir: Path, model: nn.Module, phase: Phase) -> None:
    """The whole model once at the start of a phase that freezes part of it; epochs then save only the rest."""
    if phase.name != "train":
        save_tensors(run_dir / CHECKPOINT_DIR / "start.safetensors", model.state_dict())


def _save_best(run_dir: Path, model: nn.Module, phase: Phase) -> None:
    """Keep the best epoch: the whole model from scratch; in a backbone phase only what the phase changes,
    which `_finish_best` completes into `model.safetensors` when the phase ends."""
    if phase.name == "train":
        save_tensors(run_dir / WEIGHTS_FILE, model.state_dict())
    else:
        save_tensors(run_dir / CHECKPOINT_DIR / "best.safetensors", changing_state(model, phase))


def _finish_best(run_dir: Path) -> None:
    """Write `model.safetensors` from the phase's start and its best epoch's changes, if not done yet."""
    checkpoint = run_dir / CHECKPOINT_DIR
    best = checkpoint / "best.safetensors"
    if best.is_file():
        save_tensors(run_dir / WEIGHTS_FILE, {**load_tensors(checkpoint / "start.safetensors"), **load_tensors(best)})
        best.unlink()


def _save_checkpoint(run_dir: Path, model, phase: Phase, optimizer, progress: dict) -> None:
    checkpoint = run_dir / CHECKPOINT_DIR
    tensors, meta = _optimizer_tensors(optimizer)
    save_tensors(checkpoint / "last.safetensors", changing_state(model, phase))
    save_tensors(checkpoint / "optimizer.safetensors", tensors)
    # Read back by imgclf alone, which needs a NaN loss of a diverged epoch to stay a float.
    write_json(checkpoint / "state.json", {**progress, "optimizer": meta}, nan_as_null=False)


def _load_checkpoint(run_dir: Path) -> dict[str, torch.Tensor]:
    """The last saved epoch's whole state: its phase's start, overlaid with what the epoch changed."""
    checkpoint = run_dir / CHECKPOINT_DIR
    start = checkpoint / "start.safetensors"
    return {**(load_tensors(start) if start.is_file() else {}), **load_tensors(checkpoint / "last.safetensors")}


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_csv(run_dir / "history.csv", HISTORY_COLUMNS, [[record[c] for c in HISTORY_COLUMNS] for record in history])


def _write_plots(run_dir: Path, history: list[dict]) -> None:
    if history:
        save_figure(run_dir / "loss.png", plot_metric(history, "loss", "Training and validation loss"))
        save_figure(run_dir / "accuracy.png", plot_metric(history, "accuracy", "Training and validation accuracy"))


def _new_run_dir(config: TrainConfig) -> tuple[Path, bool]:
    """The run directory, made now so that no other run can take it, and whether this call made it.

    The default name has the time to the second; a run started in the same second gets a `-2`, `-3`, ... suffix.
    An `--out` folder may already exist, unless it holds a run with a saved epoch.
    """
    if config.out is not None:
        run_dir = Path(config.out)
        if (run_dir / CONFIG_FILE).exists() and _saved_epochs(run_dir):
            raise RunError(
                f"{run_dir} already holds a run. Received: --out={run_dir}. Choose a new folder, "
                "or continue that run with --resume."
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"--out must be a folder, and {run_dir} is a file. Received: --out={run_dir}.")
        existed = run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, not existed
    name = f"{config.model.replace(':', '-').replace('/', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, suffix = Path("runs") / name, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir, True
        except FileExistsError:
            suffix += 1
            run_dir = Path("runs") / f"{name}-{suffix}"


def _saved_epochs(run_dir: Path) -> bool:
    """Whether `run_dir` holds weights from at least one finished epoch."""
    return (run_dir / WEIGHTS_FILE).exists() or (run_dir / CHECKPOINT_DIR / "state.json").exists()


def _hardware(processes: Processes, precision: torch.dtype | None) -> dict:
    return {
        "device": processes.device.type,
        "processes": processes.world_size,
        "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(precision, "fp32"),
        "threads": torch.get_num_threads(),
    }


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("imgclf", "torch", "torchvision", "timm", "pillow", "numpy", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _epoch_line(record: dict, epochs: int) -> str:
    return (
        f"Epoch {record['epoch']}/{epochs} - {record['seconds']:.2f}s - loss: {record['loss']:.4f} - "
        f"accuracy: {record['accuracy']:.4f} - val_loss: {record['val_loss']:.4f} - "
        f"val_accuracy: {record['val_accuracy']:.4f}"
    )


@dataclass
class Phase:
    """A stretch of epochs with one optimiser: `train` (from scratch), `head` (frozen backbone), `fine-tune`."""

    name: str
    first_epoch: int
    last_epoch: int


def plan_phases(config: TrainConfig, backbone: bool) -> list[Phase]:
    """One phase for a model trained from scratch; head training, then optional fine-tuning, for a backbone."""
    if not backbone:
        return [Phase("train", 1, config.epochs)]
    phases = [Phase("head", 1, config.epochs)]
    if config.fine_tune is not None:
        phases.append(Phase("fine-tune", config.epochs + 1, config.epochs + config.fine_tune_epochs))
    return phases


@dataclass
class PhaseSetup:
    """What a phase trains with: how batches reach the model, where they come from, and the optimiser.

    `model` is what the phase runs: the whole model, or the trainable end of its head on cached features.
    `train_model` is what a training step calls: `model`, or in several processes `model` wrapped in
    DistributedDataParallel (which averages the gradients); evaluation calls `model` itself.
    """

    step: Step
    train: loading.BatchSource | FeatureSource
    val: loading.BatchSource | FeatureSource
    optimizer: torch.optim.Optimizer
    model: nn.Module
    train_model: nn.Module
    scaler: torch.amp.GradScaler


def _weights_identity(config: TrainConfig) -> str:
    return file_digest(config.weights) if config.weights else "pretrained"


def setup_phase(
    phase: Phase,
    model: nn.Module,
    config: TrainConfig,
    preprocessing: Preprocessing,
    indexes: tuple[folders.FolderIndex, folders.FolderIndex],
    processes: Processes,
    images: dict,
) -> PhaseSetup:
    """Freeze what the phase keeps fixed, pick features or images, and make the phase's optimiser.

    A frozen backbone without augmentation never needs to run twice on the same image: its features come
    from (or go into) the on-disk feature cache and only the head trains. In several processes the first one
    on each machine fills the cache, and the others then read it. `images` memoises the image sources.
    """
    device = processes.device
    if phase.name != "train":
        set_trainable_blocks(model, config.fine_tune if phase.name == "fine-tune" else None)
    lr = (config.fine_tune_lr or config.lr / 10) if phase.name == "fine-tune" else config.lr
    optimizer = make_optimizer(config.optimizer, model.parameters(), lr)
    precision = resolve_precision(config.precision, device)
    if phase.name == "head" and config.augment.is_identity and config.feature_cache:
        prefix = fixed_prefix_length(model.head)
        extractor = nn.Sequential(model.backbone, *model.head[:prefix])
        key = backbone_key(config.model, _weights_identity(config), preprocessing, extractor, precision)
        cache = FeatureCache(cache_root() / key)
        with processes.local_main_first():
            train, val = (FeatureSource(index, extractor, preprocessing, cache, device, precision) for index in indexes)
        step = Step(device, None, False, preprocessing, config.augment, features=True)
        head = model.head[prefix:]
        return PhaseSetup(step, train, val, optimizer, head, processes.wrap(head), gradient_scaler(device, None))
    if not images:
        # With the decoded-image cache, the first process on a machine decodes and the others read its cache.
        with processes.local_main_first() if config.decode_cache else contextlib.nullcontext():
            images["train"], images["val"] = image_sources(config, preprocessing, *indexes, pins_memory(device))
    step = Step(device, precision, device.type == "cpu", preprocessing, config.augment)
    scaler = gradient_scaler(device, precision)
    if phase.name == "head":
        with processes.local_main_first():
            frozen = _frozen_start(model, config, preprocessing, precision, device, len(images["train"]))
        if frozen is not None:
            head = model.head[fixed_prefix_length(model.head) :]
            step = dataclasses.replace(step, frozen=frozen)
            return PhaseSetup(step, images["train"], images["val"], optimizer, head, processes.wrap(head), scaler)
    return PhaseSetup(step, images["train"], images["val"], optimizer, model, processes.wrap(model), scaler)


def _frozen_start(
    model: nn.Module,
    config: TrainConfig,
    preprocessing: Preprocessing,
    precision: torch.dtype | None,
    device: torch.device,
    train_images: int,
) -> Backbone | None:
    """The frozen backbone (and parameter-free start of the head) on OpenVINO, for a head phase that runs it on
    every augmented batch, when `frozen.fastest_backbone` finds that worthwhile; else None."""
    extractor = nn.Sequential(model.backbone, *model.head[: fixed_prefix_length(model.head)])
    key = backbone_key(config.model, _weights_identity(config), preprocessing, extractor, precision)
    onnx_path = cache_root() / key / "backbone.onnx"  # shared with the feature cache's extraction
    steps = config.steps_per_epoch or -(-train_images // config.batch_size)
    images = config.epochs * steps * config.batch_size
    check = check_batch(preprocessing.image_size, device)
    return fastest_backbone(extractor, check, onnx_path, precision is None, images)


def train_epoch(
    model: nn.Module,
    phase: Phase,
    setup: PhaseSetup,
    config: TrainConfig,
    processes: Processes,
    epoch: int,
    loss_weights: torch.Tensor | None,
    progress: ProgressCallback | None = None,
) -> tuple[float, float]:
    """One epoch of training steps; returns the mean loss and accuracy over the images of every process.

    `loss_weights` weighs each class in the loss (`--class-weight auto`). The batch order, dropout masks and
    augmentation draws depend only on the seed and `epoch`, so a resumed run repeats them.
    """
    torch.manual_seed(processes.seed(config.seed * 1_000_003 + epoch))
    augment_generator = torch.Generator().manual_seed(processes.seed(config.seed * 7_919 + epoch))
    plan = loading.epoch_batches(len(setup.train), config.batch_size, config.steps_per_epoch, config.seed, epoch)
    shards = processes.shard(plan)  # on one process: every batch, whole, with weight 1
    model.train()
    if phase.name == "head":
        model.backbone.eval()
    elif phase.name == "fine-tune":
        freeze_batchnorm(model)
    total_loss, correct, seen = 0.0, 0, 0
    batches = setup.train.batches([shard.rows for shard in shards])
    for index, (shard, (batch, labels)) in enumerate(zip(shards, batches), start=1):
        loss_weight = shard.loss_weight
        if len(labels) == 0:  # streaming found every image of this batch unreadable
            if not processes.distributed:
                continue
            batch, labels, loss_weight = batch.new_zeros((1, *batch.shape[1:])), labels.new_zeros(1), 0.0
        labels = labels.to(processes.device, non_blocking=True)
        logits = setup.step.forward(setup.train_model, batch, augment_generator)
        loss = compute_loss(logits, labels, loss_weights)
        setup.optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; the weight makes that the global batch's gradient.
        setup.scaler.scale(loss if loss_weight == 1 else loss * loss_weight).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
        if loss_weight:  # weight 0: a stand-in row for a process left out of a small batch
            total_loss += loss.item() * len(labels)
            correct += int((predicted_labels(logits.detach()) == labels).sum())
            seen += len(labels)
        if progress is not None:
            progress(epoch, index, len(plan))
    total_loss, correct, seen = processes.sum(total_loss, correct, seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _check_sources(setup: PhaseSetup, strict: bool) -> list[folders.SkippedFile]:
    skipped = setup.train.skipped + setup.val.skipped
    if strict:
        _fail_if_unreadable(skipped)
    for name, source in (("training", setup.train), ("validation", setup.val)):
        if len(source) == 0:
            raise folders.DatasetError(f"No readable {name} images are left after skipping unreadable files.")
    return skipped


def resumed_config(run_dir: str | Path, **options) -> tuple[RunConfig, TrainConfig, dict]:
    """What `--resume run_dir` continues: the saved run config, its training options with `options` applied, and
    the state of its last saved epoch. Raises `RunError` when there is no saved epoch or no epoch left to train."""
    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    config = validate(dataclasses.replace(saved.train, **options))
    path = run_dir / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        raise RunError(f"{run_dir} has no {CHECKPOINT_DIR}/state.json to resume from.")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is damaged ({error}); the run cannot be resumed from it.") from None
    last_epoch = plan_phases(config, get_spec(config.model).backbone)[-1].last_epoch
    if state["epoch"] >= last_epoch:
        raise RunError(
            f"{run_dir} has already trained {state['epoch']} epoch{'s' if state['epoch'] != 1 else ''}. "
            f"Received: --epochs={config.epochs}"
            + (f", --fine-tune-epochs={config.fine_tune_epochs}" if config.fine_tune is not None else "")
            + ". Give more epochs in all to train on, or use the run as it is."
        )
    return saved, config, state


def check_before_training(config: TrainConfig) -> None:
    """Raise the errors that `train` would raise on `config` before its first step: device, precision, folders.

    `imgclf train --nproc N` checks here once, rather than have N processes start and each say the same.
    """
    resolve_precision(config.precision, resolve_device(config.device))
    folders.split_folder(config, folders.index_folder(config.data))


def train(
    data: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: ProgressCallback | None = None,
    **options,
) -> Run:
    """Train a classifier on `data` (a folder of class sub-folders) and return the loaded best `Run`.

    Options are `TrainConfig`'s fields (`val`, `model`, `augment`, `epochs`, ...). `resume` continues a run
    directory from its last saved epoch (`epochs` may be raised). Under torchrun each process calls this and
    gets the same `Run`; the main process alone writes it (see `distributed.py`).

    >>> run = imgclf.train("cars-planes/training_set", val="cars-planes/val_set", augment="seed", epochs=30)
    >>> run.predict("plane.jpg").label
    'planes'
    """
    if resume is not None:
        saved, config, state = resumed_config(resume, **options)
    else:
        config = config if config is not None else make_train_config(data, **options)
        state, saved = None, None
    processes = distributed.connect(resolve_device(config.device))
    distributed.check_batch_size(config.batch_size, processes.world_size)
    if resume is not None:
        run_dir, made_run_dir = Path(resume), False
    else:
        run_dir, made_run_dir = processes.from_main(_new_run_dir, config)
    try:
        return _train_run(config, saved, state, run_dir, processes, progress)
    except BaseException:
        if made_run_dir and processes.is_main and not _saved_epochs(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first epoch: nothing worth keeping
        raise


def _train_run(
    config: TrainConfig,
    saved: RunConfig | None,
    state: dict | None,
    run_dir: Path,
    processes: Processes,
    progress: ProgressCallback | None,
) -> Run:
    """`train`'s work once the run directory is known: data, model, the epochs of each phase, the finished run.

    `saved` and `state` are the resumed run's config and last saved epoch (None for a new run).
    """
    # Data
    spec = get_spec(config.model)
    preprocessing = dataclasses.replace(
        spec.preprocessing, image_size=config.image_size or spec.preprocessing.image_size
    )
    indexes = index_data(config, warn=processes.is_main)
    class_names = indexes[0].class_names
    if saved is not None and class_names != saved.class_names:
        raise RunError(
            f"{config.data} now has classes {class_names} but the run was trained on "
            f"{saved.class_names}; resume needs the same classes."
        )

    # Model
    device = processes.device
    torch.manual_seed(config.seed)
    build = BuildOptions(pretrained=state is None, weights=config.weights if state is None else None, head=config.head)
    model = create_model(config.model, len(class_names), preprocessing.image_size, build).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    phases = plan_phases(config, spec.backbone)
    history: list[dict] = []
    best_val_loss, epochs_without_improvement, start_epoch = float("inf"), 0, 1
    # Read before any process can write them.
    has_weights = (run_dir / WEIGHTS_FILE).exists() or (run_dir / CHECKPOINT_DIR / "best.safetensors").exists()
    if state is not None:
        model.load_state_dict(_load_checkpoint(run_dir))
        history, best_val_loss = state["history"], state["best_val_loss"]
        epochs_without_improvement, start_epoch = state["epochs_without_improvement"], state["epoch"] + 1
        log.info("Resuming %s from epoch %d of %d.", run_dir, start_epoch, phases[-1].last_epoch)
    log.info(
        "Model %s (%d outputs) on %s, %s, augmentation: %s.",
        config.model,
        num_outputs(len(class_names)),
        device if not processes.distributed else f"{processes.world_size} processes ({device.type})",
        config.optimizer,
        describe_augment(config.augment),
    )

    # Loop
    images: dict = {}
    dataset_summary: dict = {}
    for phase in phases:
        if phase.last_epoch < start_epoch:
            continue
        setup = setup_phase(phase, model, config, preprocessing, indexes, processes, images)
        skipped = _check_sources(setup, config.strict)
        if state is not None and state.get("phase", phase.name) == phase.name and start_epoch > phase.first_epoch:
            _restore_optimizer(
                setup.optimizer, load_tensors(run_dir / CHECKPOINT_DIR / "optimizer.safetensors"), state["optimizer"]
            )
            if state.get("gradient_scaler"):
                setup.scaler.load_state_dict(state["gradient_scaler"])
        if not dataset_summary:
            dataset_summary = _dataset_summary(indexes, setup, skipped)
            if processes.is_main:  # the other processes would only repeat the same warnings
                hardware = _hardware(processes, resolve_precision(config.precision, device))
                run_config = RunConfig(
                    config, class_names, preprocessing, _library_versions(), dataset_summary, hardware
                )
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(run_dir / CONFIG_FILE, run_config.to_dict())
                for item in skipped:
                    log.warning("Skipped %s: %s", item.path, item.reason)
                _write_skipped(run_dir, skipped)
        if processes.is_main:
            _finish_best(run_dir)  # the previous phase's best, before this phase's start replaces its start
            atomic_write_text(run_dir / "summary.txt", summarize(model, preprocessing) + "\n")
            if start_epoch <= phase.first_epoch or not (run_dir / CHECKPOINT_DIR / "start.safetensors").is_file():
                _save_phase_start(run_dir, model, phase)  # a phase resumed midway has its start saved already
        if phase.name == "fine-tune":
            log.info("Fine-tuning %s backbone blocks from epoch %d.", config.fine_tune, phase.first_epoch)
        loss_weights = (
            class_weights(setup.train.labels, len(class_names)).to(device) if config.class_weight == "auto" else None
        )
        try:
            for epoch in range(max(start_epoch, phase.first_epoch), phase.last_epoch + 1):
                started = time.perf_counter()
                loss, accuracy = train_epoch(model, phase, setup, config, processes, epoch, loss_weights, progress)
                val_loss, val_accuracy = evaluate(setup.model, setup.val, setup.step, config.batch_size, processes)
                record = {
                    "epoch": epoch,
                    "loss": loss,
                    "accuracy": accuracy,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "seconds": round(time.perf_counter() - started, 4),
                }
                with interrupts_held():  # Ctrl-C waits until the epoch's files are a matching set
                    history.append(record)
                    log.info(_epoch_line(record, phases[-1].last_epoch))

                    # Checkpoint (the main process writes; every process follows the same, summed, val_loss)
                    if val_loss < best_val_loss or not has_weights:
                        best_val_loss, epochs_without_improvement, has_weights = val_loss, 0, True
                        if processes.is_main:
                            _save_best(run_dir, model, phase)
                    else:
                        epochs_without_improvement += 1
                    if processes.is_main:
                        _save_checkpoint(
                            run_dir,
                            model,
                            phase,
                            setup.optimizer,
                            {
                                "epoch": epoch,
                                "phase": phase.name,
                                "best_val_loss": best_val_loss,
                                "epochs_without_improvement": epochs_without_improvement,
                                "history": history,
                                "gradient_scaler": setup.scaler.state_dict(),
                            },
                        )
                        _write_history(run_dir, history)
                if config.patience is not None and epochs_without_improvement >= config.patience:
                    log.info("Early stopping: val_loss has not improved for %d epochs.", config.patience)
                    break
        except KeyboardInterrupt:
            if not history:
                raise TrainingInterrupted("Interrupted before the first epoch ended; nothing was saved.") from None
            if processes.is_main:
                _finish_best(run_dir)
                _write_plots(run_dir, history)
            raise TrainingInterrupted(
                f"Interrupted; epoch {history[-1]['epoch']} is saved in {run_dir}. Continue with: "
                f"imgclf train --resume {run_dir}"
            ) from None
    # Streaming meets unreadable files only as it reads them, each process its own.
    met_while_streaming = processes.gather([item for source in images.values() for item in source.skipped])
    if processes.is_main:
        _write_skipped(run_dir, [*skipped, *met_while_streaming])
        run = _finish_run(run_dir, model, setup, indexes[1], config.batch_size, history, best_val_loss)
    processes.barrier()  # the other processes wait for the finished run directory
    if not processes.is_main:
        run = load(run_dir, device=str(device))
    processes.close()
    return run


def _finish_run(
    run_dir: Path,
    model: nn.Module,
    setup: PhaseSetup,
    val_index: folders.FolderIndex,
    batch_size: int,
    history: list[dict],
    best_val_loss: float,
) -> Run:
    """After the last epoch: keep the best weights, plot, fit the temperature, then score and report the run."""
    _finish_best(run_dir)
    _write_plots(run_dir, history)
    model.load_state_dict(load_tensors(run_dir / WEIGHTS_FILE))
    calibration = calibrate(setup.model, setup.val, setup.step, batch_size)
    write_json(run_dir / CALIBRATION_FILE, calibration)
    log.info(
        "Best val_loss %.4f; temperature %.3f fitted on the validation images; run saved in %s",
        best_val_loss,
        calibration["temperature"],
        run_dir,
    )
    run = load(run_dir, device=str(setup.step.device))
    evaluation = evaluate_index(run, val_index, batch_size)
    write_evaluation(evaluation, run_dir)
    write_report(run, evaluation, run_dir / REPORT_FILE)
    return run


def _write_skipped(run_dir: Path, skipped: list[folders.SkippedFile]) -> None:
    """`skipped.csv`: each unreadable file once, with why; nothing when every file was read."""
    unique = {item.path: item.reason for item in skipped}
    if unique:
        write_csv(run_dir / "skipped.csv", ("file", "reason"), sorted(unique.items()))


def _dataset_summary(indexes, setup: PhaseSetup, skipped: list) -> dict:
    train_index, val_index = indexes
    return {
        "train_root": train_index.root,
        "val_root": val_index.root,
        "train_count": len(setup.train),
        "val_count": len(setup.val),
        "train_class_counts": train_index.class_counts(),
        "val_class_counts": val_index.class_counts(),
        "skipped": len(skipped),
        "in_memory": setup.train.holds_features or setup.train.decoded is not None,
        "features_cached": setup.train.holds_features,
    }
