"""Training: data, model, then for each phase and each epoch train, validate, save; then finish the run.

imgclf train data/training_set --val data/val_set --model seed-cnn --augment seed --epochs 30 --steps-per-epoch 30
imgclf.train("data/training_set", val="data/val_set", model="seed-cnn", augment="seed", epochs=30, steps_per_epoch=30)

In several processes (DistributedDataParallel; `--batch-size` stays the global batch, see `distributed.py`):
torchrun --standalone --nproc-per-node 2 -m imgclf train data/training_set --val data/val_set --model seed-cnn
imgclf train data/training_set --val data/val_set --model seed-cnn --nproc 2

`options.py` checks the options; `phases.py` plans the phases and sets each up, with the batches of `sources.py`;
`steps.py` holds the steps, losses and scores; `writer.py` writes the run directory, and `checkpoints.py` its
`checkpoint/` folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from imgclf.config import ImgclfError, RunConfig, TrainConfig, validate
from imgclf.data import loading
from imgclf.data.augment import describe as describe_augment
from imgclf.data.folders import imbalance_warning, warn_skipped
from imgclf.deploy.predictor import Run
from imgclf.devices import resolve_device, resolve_precision
from imgclf.files import interrupts_held
from imgclf.models import BuildOptions, create_model, get_spec, num_outputs
from imgclf.runs import RunError
from imgclf.training import distributed
from imgclf.training.budget import Deadline
from imgclf.training.checkpoints import TrainingProgress, has_saved_epoch
from imgclf.training.distributed import Processes
from imgclf.training.finish import finish
from imgclf.training.options import (
    index_data,
    make_train_config,
    resumed_config,
    run_config,
    run_preprocessing,
    warn_if_labels_changed,
    with_multi_label,
)
from imgclf.training.phases import Phase, PhaseKind, PhaseSetup, plan_phases, setup_phase
from imgclf.training.presets import SEARCHING_PRESETS, train_preset
from imgclf.training.progress import epoch_bar
from imgclf.training.sources import TrainingInputs, check_sources
from imgclf.training.steps import compute_loss, evaluate, hits
from imgclf.training.tracking import Tracker, tracker_for
from imgclf.training.writer import SKIPPED_FILE, RunWriter, claim_run_dir

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""Called as `progress(epoch, step, steps)` after every training step."""


class TrainingInterrupted(ImgclfError):
    """Training stopped on Ctrl-C; the last complete epoch is saved and `--resume` continues from it."""

    exit_code = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)


class TrainingDiverged(ImgclfError):
    """A loss became NaN or infinite: training stopped, keeping the last epoch whose losses were finite."""


class NonFiniteLoss(Exception):
    """Raised inside the loop at the first non-finite loss: in training at `step` of `steps`, or in validation
    (`step` None); `_saved_when_stopped` turns it into `TrainingDiverged`."""

    def __init__(self, epoch: int, value: float, step: int | None = None, steps: int | None = None):
        super().__init__(epoch, value, step, steps)
        self.epoch, self.value, self.step, self.steps = epoch, value, step, steps


def train(
    data: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: ProgressCallback | Literal[False] | None = None,
    **options,
) -> Run:
    """Train a classifier on `data` (a folder of class sub-folders), or on `labels=` (a CSV of file,label rows,
    paths relative to `images=`), and return the loaded best `Run`.

    Options are `TrainConfig`'s fields (`val`, `model`, `augment`, `epochs`, ...). `resume` continues a run
    directory from its last saved epoch (`epochs` may be raised), or finishes a run stopped after its last epoch.
    Under torchrun each process calls this and gets the same `Run`; the main process alone writes it (see
    `distributed.py`). Without `progress`, a bar shows each epoch's steps in a terminal or a notebook;
    `progress=False` shows none.

    >>> run = imgclf.train("cars-planes/training_set", val="cars-planes/val_set", augment="seed", epochs=30)
    >>> run.predict("plane.jpg").label
    'planes'
    """
    if resume is not None:
        saved, config, state = resumed_config(resume, **options)
    else:
        config = validate(config) if config is not None else make_train_config(data, **options)
        state, saved = None, None
    deadline = Deadline.of(config)
    processes = distributed.connect(resolve_device(config.device))
    distributed.check_batch_size(config.batch_size, processes.world_size)
    tracker = tracker_for(config.track, processes.is_main)
    if resume is not None:
        run_dir, made_run_dir = Path(resume), False
    else:
        run_dir, made_run_dir = processes.from_main(claim_run_dir, config)
    bar = epoch_bar() if progress is None else None
    try:
        if config.preset in SEARCHING_PRESETS:
            run = train_preset(config, RunWriter(run_dir), processes, deadline)
        else:
            writer = RunWriter(run_dir)
            run = _train_run(config, saved, state, writer, processes, bar or progress or None, tracker, deadline)
    except BaseException as error:
        tracker.finish(run_dir, stopped=error)
        if made_run_dir and processes.is_main and not has_saved_epoch(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first epoch: nothing worth keeping
        raise
    finally:
        if bar is not None:
            bar.close()
    tracker.finish(run_dir)
    return run


def _train_run(
    config: TrainConfig,
    saved: RunConfig | None,
    state: dict | None,
    writer: RunWriter,
    processes: Processes,
    progress: ProgressCallback | None,
    tracker: Tracker,
    deadline: Deadline,
) -> Run:
    """`train`'s work once the run directory is known: data, model, the epochs of each phase, the finished run.

    `saved` and `state`: the resumed run's config and last saved epoch (None for a new run); `deadline`: --time-limit.
    """
    # Data
    spec = get_spec(config.model)
    preprocessing = run_preprocessing(config, spec.preprocessing)
    indexes = _indexed_data(config, saved, processes)
    config = with_multi_label(config, indexes[0])

    # Model
    classes = len(indexes[0].class_names)
    model = _build_model(config, preprocessing.image_size, classes, processes.device, new=state is None)
    phases = plan_phases(config, spec.backbone)
    done = _progress_so_far(model, writer, state, phases[-1].last_epoch)
    start_epoch = done.epoch + 1
    log.info(_model_line(config, classes, processes))
    precision = resolve_precision(config.precision, processes.device)
    inputs = TrainingInputs(config, preprocessing, indexes, processes, precision)

    # Loop (none left when a resumed run stopped after its last epoch, before it was finished)
    tracker.start(config, writer.run_dir)
    setup, out_of_time = None, False
    for phase in phases:
        if phase.last_epoch < start_epoch or out_of_time:
            continue
        setup = _start_phase(phase, model, inputs, writer, state, start_epoch, setup)
        with _saved_when_stopped(writer, done, processes, _what_to_try(config, phase, setup)):
            for epoch in range(max(start_epoch, phase.first_epoch), phase.last_epoch + 1):
                started = time.perf_counter()
                loss, accuracy = train_epoch(model, phase, setup, config, processes, epoch, progress)
                val_loss, val_accuracy = evaluate(setup.model, setup.val, setup.step, config.batch_size, processes)
                if not math.isfinite(val_loss):  # the same summed val_loss on every process
                    raise NonFiniteLoss(epoch, val_loss)
                seconds = round(time.perf_counter() - started, 4)
                record = _epoch_record(epoch, loss, accuracy, val_loss, val_accuracy, seconds)
                with interrupts_held():  # Ctrl-C waits until the epoch's files are a matching set
                    best = done.add(record)  # every process takes the same decision, from the same summed val_loss
                    log.info(_epoch_line(record, phases[-1].last_epoch))
                    if processes.is_main:
                        writer.save_epoch(model, phase, setup, done, best)
                        tracker.log_epoch(record)
                out_of_time = _out_of_time(deadline, seconds, processes, epoch, phases[-1].last_epoch)
                if out_of_time or _stalled(done, config.patience):
                    break
    with _saved_when_stopped(writer, done, processes):
        return finish(model, setup, inputs, writer, done)


def _stalled(done: TrainingProgress, patience: int | None) -> bool:
    """Whether val_loss has stalled for `--patience` epochs (and says so)."""
    if done.stalled(patience):
        log.info("Early stopping: val_loss has not improved for %d epochs.", patience)
        return True
    return False


def _out_of_time(deadline: Deadline, epoch_seconds: float, processes: Processes, epoch: int, epochs: int) -> bool:
    """Whether another epoch as long as the last one would end past the deadline; every process takes the decision
    of the one whose clock says so first, so that none waits for the others at a step they never take."""
    late = processes.sum(0.0 if deadline.fits(epoch_seconds) else 1.0)[0] > 0
    if late and epoch < epochs:
        log.info(
            "Time limit: stopping after epoch %d of %d; another epoch of about %.0f s would end past it (%.0f s left).",
            epoch,
            epochs,
            epoch_seconds,
            max(deadline.left(), 0),
        )
    return late


def _indexed_data(config: TrainConfig, saved: RunConfig | None, processes: Processes) -> tuple:
    """The (train, val) folder indexes; a resumed run must find the classes it was trained on."""
    indexes = index_data(config, warn=processes.is_main)
    if saved is not None and processes.is_main:
        warn_if_labels_changed(config, saved)
    if saved is not None and indexes[0].class_names != saved.class_names:
        raise RunError(
            f"{config.labels or config.data} now has classes {indexes[0].class_names} but the run was trained on "
            f"{saved.class_names}; resume needs the same classes."
        )
    return indexes


def _build_model(config: TrainConfig, image_size: int, classes: int, device: torch.device, new: bool) -> nn.Module:
    """The model to train, on `device`: pretrained (or `--weights`) for a `new` run, else bare for resuming."""
    torch.manual_seed(config.seed)
    build = BuildOptions(pretrained=new, weights=config.weights if new else None, head=config.head)
    model = create_model(config.model, classes, image_size, build, config.multi_label).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def _progress_so_far(model: nn.Module, writer: RunWriter, state: dict | None, epochs: int) -> TrainingProgress:
    """A new run's progress, or a resumed one's (`state`), which also gives `model` its last saved epoch."""
    if state is None:
        return TrainingProgress()
    model.load_state_dict(writer.last_epoch_weights())
    if state["epoch"] >= epochs:
        log.info("Finishing %s: its %d epochs are trained.", writer.run_dir, state["epoch"])
    else:
        log.info("Resuming %s from epoch %d of %d.", writer.run_dir, state["epoch"] + 1, epochs)
    return TrainingProgress.from_state(state)


def _model_line(config: TrainConfig, classes: int, processes: Processes) -> str:
    device = processes.device
    where = device if not processes.distributed else f"{processes.world_size} processes ({device.type})"
    return (
        f"Model {config.model} ({num_outputs(classes, config.multi_label)} outputs) on {where}, {config.optimizer}, "
        f"augmentation: {describe_augment(config.augment)}."
    )


def _start_phase(
    phase: Phase,
    model: nn.Module,
    inputs: TrainingInputs,
    writer: RunWriter,
    state: dict | None,
    start_epoch: int,
    previous: PhaseSetup | None,
) -> PhaseSetup:
    """Set `phase` up, restore its optimiser when it resumes midway, and save its start. The first phase of the
    call (`previous` None) writes `config.json` and `skipped.csv`."""
    setup = setup_phase(phase, model, inputs, previous)
    skipped = check_sources(setup.train, setup.val, inputs.config.strict)
    kind = phase.kind.value
    if state is not None and state.get("phase", kind) == kind and start_epoch > phase.first_epoch:
        writer.restore_optimizer(setup, state)
    if inputs.processes.is_main:  # the other processes would only repeat the same warnings
        if previous is None:
            writer.write_config(run_config(inputs, setup, skipped))
            warn_skipped(skipped, writer.run_dir / SKIPPED_FILE)
            writer.write_skipped(skipped)
            _warn_of_imbalance(inputs, setup)
        writer.start_phase(model, inputs.preprocessing, phase, from_its_start=start_epoch <= phase.first_epoch)
    if phase.kind is PhaseKind.FINE_TUNE:
        log.info("Fine-tuning %s backbone blocks from epoch %d.", inputs.config.fine_tune, phase.first_epoch)
    return setup


def _warn_of_imbalance(inputs: TrainingInputs, setup: PhaseSetup) -> None:
    """Warn when the training images that could be read so far are imbalanced (unless `--class-weight auto`)."""
    if inputs.config.class_weight != "auto":
        unreadable = {item.path for item in setup.train.skipped}
        warning = imbalance_warning(inputs.indexes[0].without(unreadable))
        if warning is not None:
            log.warning(warning)


def train_epoch(
    model: nn.Module,
    phase: Phase,
    setup: PhaseSetup,
    config: TrainConfig,
    processes: Processes,
    epoch: int,
    progress: ProgressCallback | None = None,
) -> tuple[float, float]:
    """One epoch of training steps; returns the mean loss and accuracy over the images of every process.

    The batch order, dropout masks and augmentation draws depend only on the seed and `epoch`, so a resumed run
    repeats them. Raises `NonFiniteLoss` at the first step whose loss is NaN or infinite.
    """
    torch.manual_seed(processes.seed(config.seed * 1_000_003 + epoch))
    augment_generator = torch.Generator().manual_seed(processes.seed(config.seed * 7_919 + epoch))
    plan = loading.epoch_batches(len(setup.train), config.batch_size, config.steps_per_epoch, config.seed, epoch)
    shards = processes.shard(plan)  # on one process: every batch, whole, with weight 1
    phase.set_training_mode(model)
    total_loss, correct, seen, diverged = 0.0, 0, 0, None
    batches = setup.train.batches([shard.rows for shard in shards])
    for index, (shard, (batch, labels)) in enumerate(zip(shards, batches), start=1):
        loss_weight = shard.loss_weight
        if len(labels) == 0:  # streaming found every image of this batch unreadable
            if not processes.distributed:
                continue
            batch, labels, loss_weight = batch.new_zeros((1, *batch.shape[1:])), labels.new_zeros(1), 0.0
        labels = labels.to(processes.device, non_blocking=True)
        logits = setup.step.forward(setup.train_model, batch, augment_generator)
        loss = compute_loss(logits, labels, setup.loss_weights, setup.step.multi_label)
        setup.optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; the weight makes that the global batch's gradient.
        setup.scaler.scale(loss if loss_weight == 1 else loss * loss_weight).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
        value = loss.item()
        if not math.isfinite(value):
            diverged = diverged or (index, value)
            if not processes.distributed:
                break
        if loss_weight:  # weight 0: a stand-in row for a process left out of a small batch
            total_loss += value * len(labels)
            correct += hits(logits.detach(), labels, setup.step.multi_label)
            seen += len(labels)
        if progress is not None:
            progress(epoch, index, len(plan))
    # Processes end the epoch together: one that stopped alone would leave the others waiting at the next step.
    found = sorted(step for step in processes.gather([diverged]) if step is not None)
    if found:
        step, value = found[0]
        raise NonFiniteLoss(epoch, value, step, len(plan))
    total_loss, correct, seen = processes.sum(total_loss, correct, seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@contextlib.contextmanager
def _saved_when_stopped(
    writer: RunWriter, done: TrainingProgress, processes: Processes, advice: str = ""
) -> Iterator[None]:
    """Turn Ctrl-C during the block into `TrainingInterrupted`, which says how to resume from the last saved
    epoch, and a `NonFiniteLoss` into `TrainingDiverged`, which says where and what to try (`advice`)."""
    try:
        yield
    except (KeyboardInterrupt, NonFiniteLoss) as stop:
        if processes.is_main and done.history:
            writer.keep_best()
            writer.write_plots(done.history)
        if isinstance(stop, NonFiniteLoss):
            raise TrainingDiverged(_diverged_line(stop, writer, done, advice)) from None
        if not done.history:
            raise TrainingInterrupted("Interrupted before the first epoch ended; nothing was saved.") from None
        raise TrainingInterrupted(
            f"Interrupted; epoch {done.history[-1]['epoch']} is saved in {writer.run_dir}. Continue with: "
            f"imgclf train --resume {writer.run_dir}"
        ) from None


def _diverged_line(stop: NonFiniteLoss, writer: RunWriter, done: TrainingProgress, advice: str) -> str:
    """`TrainingDiverged`'s line: where the loss stopped being finite, what is kept, what to try."""
    where = f"epoch {stop.epoch}, step {stop.step} of {stop.steps}" if stop.step else f"epoch {stop.epoch}'s validation"
    kept = (
        f"Epoch {done.history[-1]['epoch']}, the last with finite losses, is saved in {writer.run_dir}."
        if done.history
        else "Nothing was saved."
    )
    return f"Training diverged: the loss became {stop.value} at {where}. {kept} {advice}"


def _what_to_try(config: TrainConfig, phase: Phase, setup: PhaseSetup) -> str:
    """What to change when `phase` diverges: its learning rate, and the precision when it is not fp32."""
    option = "--fine-tune-lr" if phase.kind is PhaseKind.FINE_TUNE else "--lr"
    tries = [f"a lower {option} (this run: {phase.learning_rate(config):g})"]
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(setup.step.autocast_dtype)
    if precision is not None:
        tries.append(f"--precision fp32 (this run: {precision})")
    return f"Start a new run with {' or '.join(tries)}."


def _epoch_record(
    epoch: int, loss: float, accuracy: float, val_loss: float, val_accuracy: float, seconds: float
) -> dict:
    """A row of `history.csv`."""
    return {
        "epoch": epoch,
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "seconds": seconds,
    }


def _epoch_line(record: dict, epochs: int) -> str:
    return (
        f"Epoch {record['epoch']}/{epochs} - {record['seconds']:.2f}s - loss: {record['loss']:.4f} - "
        f"accuracy: {record['accuracy']:.4f} - val_loss: {record['val_loss']:.4f} - "
        f"val_accuracy: {record['val_accuracy']:.4f}"
    )
