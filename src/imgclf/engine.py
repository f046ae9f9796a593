"""Training: data, model, optimiser, loop, validation, checkpoints — read top to bottom.

imgclf train data/training_set --val data/val_set --augment seed --epochs 30 --steps-per-epoch 30
imgclf.train("data/training_set", val="data/val_set", augment="seed", epochs=30, steps_per_epoch=30)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imgclf import data as datasets
from imgclf.augment import augment
from imgclf.augment import describe as describe_augment
from imgclf.config import AUGMENT_PRESETS, AugmentConfig, ImgclfError, RunConfig, TrainConfig, validate
from imgclf.images import normalize
from imgclf.models import get_spec, num_outputs, summarize
from imgclf.plots import plot_metric
from imgclf.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    WEIGHTS_FILE,
    Run,
    RunError,
    atomic_write_text,
    build_model,
    load,
    load_tensors,
    read_config,
    save_figure,
    save_tensors,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""Called as `progress(epoch, step, steps)` after every training step."""

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class TrainingInterrupted(ImgclfError):
    """Training stopped on Ctrl-C; the last complete epoch is saved and `--resume` continues from it."""


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ImgclfError("No CUDA device is available. Received: --device=cuda. Use --device cpu or auto.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision` on `device`, or None for plain fp32."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


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
    return validate(TrainConfig(data=str(data), augment=augment, **options))


@dataclass
class PreparedData:
    """The training and validation batch sources of a run, with what was found and skipped."""

    class_names: list[str]
    train: datasets.BatchSource
    val: datasets.BatchSource
    summary: dict[str, object]

    @property
    def skipped(self) -> list[datasets.SkippedFile]:
        return self.train.skipped + self.val.skipped


def _split(config: TrainConfig, data_index: datasets.FolderIndex) -> tuple[datasets.FolderIndex, ...]:
    if config.val is not None:
        val_index = datasets.index_folder(config.val)
        datasets.check_same_classes(data_index, val_index)
        return data_index, val_index
    fraction = config.val_split if config.val_split is not None else 0.2
    if config.val_split is None:
        log.info("No --val folder given: holding out %g of %s for validation (--val-split).", fraction, config.data)
    train_rows, val_rows = datasets.stratified_split(data_index.labels, fraction, config.seed)
    return data_index.subset(train_rows), data_index.subset(val_rows)


def prepare_data(config: TrainConfig, preprocessing) -> PreparedData:
    """Index, split, check and decode (or set up streaming for) the run's images."""
    data_index = datasets.index_folder(config.data)
    if data_index.skipped_hidden or data_index.skipped_not_image or data_index.loose_files:
        log.info(
            "Passed over in %s: %d hidden files, %d non-image files, %d files outside class folders.",
            config.data,
            data_index.skipped_hidden,
            data_index.skipped_not_image,
            data_index.loose_files,
        )
    train_index, val_index = _split(config, data_index)
    log.info("Training: %s", datasets.describe(train_index))
    log.info("Validation: %s", datasets.describe(val_index))
    if (warning := datasets.imbalance_warning(train_index)) is not None:
        log.warning(warning)

    needed = datasets.memory_needed_mb(len(train_index.files) + len(val_index.files), preprocessing)
    in_memory = needed <= config.cache_mem_mb
    log.info(
        "%s images (%.0f MB at %d×%d; --cache-mem %d MB).",
        "Decoding all" if in_memory else "Streaming",
        needed,
        preprocessing.image_size,
        preprocessing.image_size,
        config.cache_mem_mb,
    )
    if config.strict and not in_memory:
        unreadable = [
            *datasets.find_unreadable(train_index, preprocessing, config.workers),
            *datasets.find_unreadable(val_index, preprocessing, config.workers),
        ]
        _fail_if_unreadable(unreadable)
    train = datasets.BatchSource(train_index, preprocessing, in_memory, config.workers)
    val = datasets.BatchSource(val_index, preprocessing, in_memory, config.workers)
    skipped = train.skipped + val.skipped
    if config.strict:
        _fail_if_unreadable(skipped)
    for item in skipped:
        log.warning("Skipped %s: %s", item.path, item.reason)
    for name, source in (("training", train), ("validation", val)):
        if len(source) == 0:
            raise datasets.DatasetError(f"No readable {name} images are left after skipping unreadable files.")
    summary = {
        "train_root": train_index.root,
        "val_root": val_index.root,
        "train_count": len(train),
        "val_count": len(val),
        "train_class_counts": train_index.class_counts(),
        "val_class_counts": val_index.class_counts(),
        "skipped": len(skipped),
        "in_memory": in_memory,
    }
    return PreparedData(train_index.class_names, train, val, summary)


def _fail_if_unreadable(unreadable: list[datasets.SkippedFile]) -> None:
    if unreadable:
        listing = "; ".join(f"{item.path}: {item.reason}" for item in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise datasets.DatasetError(
            f"--strict: {len(unreadable)} unreadable image(s): {listing}{more}. Fix or remove them, "
            "or drop --strict to skip them."
        )


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """Adam, RMSprop (Keras's rho = 0.9 and epsilon = 1e-7) or SGD with momentum 0.9."""
    parameters = [p for p in parameters if p.requires_grad]
    if name == "adam":
        # On a CPU the default updates one tensor at a time: 3.7 ms a step for the seed-cnn against 1.1 ms.
        # Not fused=True (0.4 ms): its CPU kernel ignores strides, so after a resume, whose saved state is
        # contiguous while the conv weights are channels-last, it pairs the wrong moments with each weight.
        return torch.optim.Adam(parameters, lr=lr, eps=1e-7, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=0.9, eps=1e-7)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9)


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
    """What the loop needs for every batch: where and how to run the model."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    preprocessing: object

    def forward(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        inputs = normalize(inputs.to(self.device, non_blocking=True), self.preprocessing)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            return model(inputs).float()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, source: datasets.BatchSource, step: Step, batch_size: int) -> tuple[float, float]:
    """Mean loss and accuracy over every image of `source`, each seen once."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in source.batches(datasets.sequential_batches(len(source), batch_size)):
        logits = step.forward(model, images)
        labels = labels.to(step.device)
        total_loss += float(compute_loss(logits, labels, None)) * len(labels)
        correct += int((predicted_labels(logits) == labels).sum())
        seen += len(labels)
    return total_loss / max(seen, 1), correct / max(seen, 1)


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


def _save_checkpoint(run_dir: Path, model, optimizer, progress: dict) -> None:
    checkpoint = run_dir / CHECKPOINT_DIR
    tensors, meta = _optimizer_tensors(optimizer)
    save_tensors(checkpoint / "last.safetensors", model.state_dict())
    save_tensors(checkpoint / "optimizer.safetensors", tensors)
    write_json(checkpoint / "state.json", {**progress, "optimizer": meta})


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_csv(run_dir / "history.csv", HISTORY_COLUMNS, [[record[c] for c in HISTORY_COLUMNS] for record in history])


def _write_plots(run_dir: Path, history: list[dict]) -> None:
    if history:
        save_figure(run_dir / "loss.png", plot_metric(history, "loss", "Training and validation loss"))
        save_figure(run_dir / "accuracy.png", plot_metric(history, "accuracy", "Training and validation accuracy"))


def _new_run_dir(config: TrainConfig) -> Path:
    if config.out is not None:
        run_dir = Path(config.out)
        if (run_dir / CONFIG_FILE).exists():
            raise RunError(
                f"{run_dir} already holds a run. Received: --out={run_dir}. Choose a new folder, "
                "or continue that run with --resume."
            )
        return run_dir
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path("runs") / f"{config.model}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path("runs") / f"{config.model}-{stamp}-{suffix}"
    return run_dir


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
    directory from its last saved epoch (`epochs` may be raised).

    >>> run = imgclf.train("cars-planes/training_set", val="cars-planes/val_set", augment="seed", epochs=30)
    >>> run.predict("plane.jpg").label
    'planes'
    """
    if resume is not None:
        run_dir = Path(resume)
        saved = read_config(run_dir)
        config = validate(dataclasses.replace(saved.train, **options))
        state = (
            json.loads((run_dir / CHECKPOINT_DIR / "state.json").read_text())
            if (run_dir / CHECKPOINT_DIR / "state.json").is_file()
            else None
        )
        if state is None:
            raise RunError(f"{run_dir} has no {CHECKPOINT_DIR}/state.json to resume from.")
    else:
        config = config if config is not None else make_train_config(data, **options)
        run_dir, state = _new_run_dir(config), None

    # Data
    spec = get_spec(config.model)
    preprocessing = dataclasses.replace(
        spec.preprocessing, image_size=config.image_size or spec.preprocessing.image_size
    )
    prepared = prepare_data(config, preprocessing)
    if state is not None and prepared.class_names != saved.class_names:
        raise RunError(
            f"{config.data} now has classes {prepared.class_names} but the run was trained on "
            f"{saved.class_names}; resume needs the same classes."
        )
    run_config = RunConfig(config, prepared.class_names, preprocessing, _library_versions(), prepared.summary)

    # Model and optimiser
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(run_config).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    step = Step(device, resolve_precision(config.precision, device), device.type == "cpu", preprocessing)
    if step.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weights = (
        class_weights(prepared.train.labels, len(prepared.class_names)).to(device)
        if config.class_weight == "auto"
        else None
    )

    history: list[dict] = []
    best_val_loss, epochs_without_improvement, start_epoch = float("inf"), 0, 1
    if state is not None:
        model.load_state_dict(load_tensors(run_dir / CHECKPOINT_DIR / "last.safetensors"))
        _restore_optimizer(
            optimizer, load_tensors(run_dir / CHECKPOINT_DIR / "optimizer.safetensors"), state["optimizer"]
        )
        history, best_val_loss = state["history"], state["best_val_loss"]
        epochs_without_improvement, start_epoch = state["epochs_without_improvement"], state["epoch"] + 1
        log.info("Resuming %s from epoch %d of %d.", run_dir, start_epoch, config.epochs)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "summary.txt", summarize(model, preprocessing) + "\n")
    write_json(run_dir / CONFIG_FILE, run_config.to_dict())
    if prepared.skipped:
        write_csv(run_dir / "skipped.csv", ("file", "reason"), [(s.path, s.reason) for s in prepared.skipped])
    log.info(
        "Model %s (%d outputs), %s on %s, augmentation: %s.",
        config.model,
        num_outputs(len(prepared.class_names)),
        config.optimizer,
        device,
        describe_augment(config.augment),
    )

    # Loop
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            torch.manual_seed(config.seed * 1_000_003 + epoch)
            augment_generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
            plan = datasets.epoch_batches(
                len(prepared.train), config.batch_size, config.steps_per_epoch, config.seed, epoch
            )
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for index, (images, labels) in enumerate(prepared.train.batches(plan), start=1):
                inputs = augment(images, config.augment, augment_generator)
                labels = labels.to(device, non_blocking=True)
                logits = step.forward(model, inputs)
                loss = compute_loss(logits, labels, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(labels)
                correct += int((predicted_labels(logits.detach()) == labels).sum())
                seen += len(labels)
                if progress is not None:
                    progress(epoch, index, len(plan))
            val_loss, val_accuracy = evaluate(model, prepared.val, step, config.batch_size)
            record = {
                "epoch": epoch,
                "loss": total_loss / max(seen, 1),
                "accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": round(time.perf_counter() - started, 4),
            }
            history.append(record)
            log.info(_epoch_line(record, config.epochs))

            # Checkpoint
            if val_loss < best_val_loss or not (run_dir / WEIGHTS_FILE).exists():
                best_val_loss, epochs_without_improvement = val_loss, 0
                save_tensors(run_dir / WEIGHTS_FILE, model.state_dict())
            else:
                epochs_without_improvement += 1
            _save_checkpoint(
                run_dir,
                model,
                optimizer,
                {
                    "epoch": epoch,
                    "best_val_loss": best_val_loss,
                    "epochs_without_improvement": epochs_without_improvement,
                    "history": history,
                },
            )
            _write_history(run_dir, history)
            if config.patience is not None and epochs_without_improvement >= config.patience:
                log.info("Early stopping: val_loss has not improved for %d epochs.", config.patience)
                break
    except KeyboardInterrupt:
        _write_plots(run_dir, history)
        saved_epoch = history[-1]["epoch"] if history else 0
        raise TrainingInterrupted(
            f"Interrupted; epoch {saved_epoch} is saved in {run_dir}. Continue with: imgclf train --resume {run_dir}"
        ) from None
    _write_plots(run_dir, history)
    log.info("Best val_loss %.4f; run saved in %s", best_val_loss, run_dir)
    return load(run_dir)
