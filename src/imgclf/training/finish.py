"""Finishing a run after its last epoch: the best weights made whole, the curves, the temperature fitted on the
validation images, the validation inputs kept for export's parity check, then the metrics and the report.

imgclf train --resume RUN      # a run stopped between its last epoch and these files: finishes it
imgclf report RUN              # a run without calibration.json: fits its temperature first

A run has finished when `calibration.json`, `metrics.json` and `report.html` are all there (`has_finished`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgclf.config import AugmentConfig, Preprocessing, TrainConfig
from imgclf.data import loading
from imgclf.data.folders import SKIPPED_SHOWN, FolderIndex, SkippedFile
from imgclf.data.run_data import validation_index
from imgclf.deploy.predictor import Run, load
from imgclf.evaluation.evaluate import evaluate_index
from imgclf.evaluation.multi_label import evaluate_multi_label, tune_thresholds
from imgclf.evaluation.report import REPORT_FILE
from imgclf.runs import CALIBRATION_FILE, THRESHOLDS_FILE, RunError, load_model, read_config
from imgclf.training.checkpoints import TrainingProgress
from imgclf.training.phases import PhaseSetup
from imgclf.training.sources import TrainingInputs
from imgclf.training.steps import Step, calibrate, label_sets, predict_logits
from imgclf.training.writer import SKIPPED_FILE, RunWriter

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def has_finished(run_dir: Path) -> bool:
    """Whether training finished `run_dir`: it is calibrated, scored and reported."""
    return all((run_dir / name).is_file() for name in (CALIBRATION_FILE, METRICS_FILE, REPORT_FILE))


def finish(
    model: nn.Module, setup: PhaseSetup | None, inputs: TrainingInputs, writer: RunWriter, done: TrainingProgress
) -> Run:
    """After the last epoch the main process completes the run directory; the others wait for it, then load it.

    `setup` is the last phase's; None when a resumed run had no epoch left to train, which then reads its
    validation images again.
    """
    processes = inputs.processes
    if setup is not None:
        # Streaming meets unreadable files only as it reads them, each process its own.
        skipped = processes.gather(setup.train.skipped + setup.val.skipped)
        if processes.is_main:
            _write_skipped(writer, skipped)
    if processes.is_main:
        run = _complete_run(model, setup, inputs, writer, done)
    processes.barrier()  # the other processes wait for the finished run directory
    if not processes.is_main:
        run = load(writer.run_dir, device=str(processes.device))
    processes.close()
    return run


def _write_skipped(writer: RunWriter, skipped: list[SkippedFile]) -> None:
    """Write `skipped.csv` again, and count in one line the files streaming found unreadable, when it named
    only the first of them."""
    listed_before = writer.skipped_count
    writer.write_skipped(skipped)
    if writer.skipped_count > max(listed_before, SKIPPED_SHOWN):
        log.warning(
            "Skipped %d unreadable files in all; %s lists every one.",
            writer.skipped_count,
            writer.run_dir / SKIPPED_FILE,
        )


def _complete_run(
    model: nn.Module, setup: PhaseSetup | None, inputs: TrainingInputs, writer: RunWriter, done: TrainingProgress
) -> Run:
    """Keep the best weights, plot, fit the temperature, keep the parity inputs, then score and report the run."""
    config, device = inputs.config, inputs.processes.device
    writer.keep_best()
    writer.write_plots(done.history)
    model.load_state_dict(writer.best_weights())
    if config.multi_label:
        return _complete_multi_label_run(model, setup, inputs, writer)
    if setup is not None:
        calibration = calibrate(setup.model, setup.val, setup.step, config.batch_size)
    else:
        validation = Validation(inputs.indexes[1], inputs.preprocessing, config.batch_size, config.workers)
        calibration = _calibrate_on_images(model, validation, inputs.precision)
    log.info(
        "Best val_loss %.4f; temperature %.3f fitted on the validation images; run saved in %s",
        done.best_val_loss,
        calibration["temperature"],
        writer.run_dir,
    )
    return finish_calibrated(writer, calibration, inputs.indexes[1], config, device)


def finish_calibrated(
    writer: RunWriter, calibration: dict, val_index: FolderIndex, config: TrainConfig, device: torch.device
) -> Run:
    """Write `calibration`, then load the run and keep its parity inputs, metrics and report of `val_index`."""
    writer.write_calibration(calibration)
    run = load(writer.run_dir, device=str(device))
    # On the CPU, in fp32: the probabilities export compares an engine with.
    writer.write_parity_inputs(run if device.type == "cpu" else load(writer.run_dir), val_index, config.workers)
    writer.write_evaluation(run, evaluate_index(run, val_index, config.batch_size))
    return run


def _complete_multi_label_run(
    model: nn.Module, setup: PhaseSetup | None, inputs: TrainingInputs, writer: RunWriter
) -> Run:
    """Tune each label's threshold for F1 on the validation images, then score the run there. The thresholds
    take the temperature's place: `calibration.json` keeps 1."""
    config, class_names = inputs.config, inputs.class_names
    if setup is not None:
        plan = loading.sequential_batches(len(setup.val), config.batch_size)
        logits, labels = predict_logits(setup.model, setup.val, setup.step, plan)
    else:
        validation = Validation(inputs.indexes[1], inputs.preprocessing, config.batch_size, config.workers)
        logits, labels = _logits_on_images(model, validation, inputs.precision, multi_label=True)
    thresholds = tune_thresholds(label_sets(labels, len(class_names)).numpy(), torch.sigmoid(logits).numpy())
    writer.write_calibration({"temperature": 1.0, "images": len(labels), "multi_label": f"see {THRESHOLDS_FILE}"})
    writer.write_thresholds(dict(zip(class_names, thresholds)))
    log.info("Thresholds tuned for F1 on the %d validation images; run saved in %s", len(labels), writer.run_dir)
    run = load(writer.run_dir, device=str(inputs.processes.device))
    writer.write_multi_label_evaluation(run, evaluate_multi_label(run, inputs.indexes[1], config.batch_size))
    return run


@dataclass(frozen=True)
class Validation:
    """The validation images of a run, and how to read them: at its preprocessing, in batches, on threads."""

    index: FolderIndex
    preprocessing: Preprocessing
    batch_size: int
    workers: int


def _calibrate_on_images(model: nn.Module, validation: Validation, precision: torch.dtype | None) -> dict:
    """`calibrate` the whole `model` on the validation images, streamed (autocast to `precision`, None: fp32)."""
    source, step = _validation_batches(model, validation, precision)
    return calibrate(model, source, step, validation.batch_size)


def _logits_on_images(
    model: nn.Module, validation: Validation, precision: torch.dtype | None, multi_label: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole `model`'s logits and the labels of the validation images, streamed."""
    source, step = _validation_batches(model, validation, precision)
    step.multi_label = multi_label
    return predict_logits(model, source, step, loading.sequential_batches(len(source), validation.batch_size))


def _validation_batches(
    model: nn.Module, validation: Validation, precision: torch.dtype | None
) -> tuple[loading.BatchSource, Step]:
    """The validation images streamed, and the step that feeds them to `model` unaugmented."""
    device = next(model.parameters()).device
    source = loading.BatchSource(validation.index, validation.preprocessing, False, validation.workers)
    return source, Step(device, precision, False, validation.preprocessing, AugmentConfig())


def calibrate_run(run_dir: str | Path, device: torch.device, batch_size: int) -> dict:
    """Fit the temperature of a run that has none on its validation images and write `calibration.json`, with
    the parity inputs that go with it; returns the calibration. The validation images must be where they were."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config.train.multi_label:
        raise RunError(f"{run_dir} is a multi-label run, which has no temperature. Finish it: imgclf train --resume.")
    model = load_model(run_dir, config).to(device).eval()
    validation = Validation(validation_index(config.train), config.preprocessing, batch_size, config.train.workers)
    calibration = _calibrate_on_images(model, validation, None)
    writer = RunWriter(run_dir)
    writer.write_calibration(calibration)
    writer.write_parity_inputs(load(run_dir), validation.index, validation.workers)
    log.info(
        "Fitted temperature %.3f on the %d validation images of %s; wrote %s.",
        calibration["temperature"],
        calibration["images"],
        run_dir,
        run_dir / CALIBRATION_FILE,
    )
    return calibration
