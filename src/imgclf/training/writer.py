"""The run directory as training writes it, through one `RunWriter` that knows where each file goes.

runs/<model>-<date>-<time>/ (or --out)
  config.json                      the options, classes, preprocessing, data and hardware (`runs.read_config`)
  summary.txt                      the model's layers and parameters, with those each phase freezes
  model.safetensors                the best epoch's weights
  checkpoint/                      what `--resume` continues from (see `checkpoints.py`)
  history.csv, loss.png, accuracy.png   every epoch's loss and accuracy, training and validation
  skipped.csv                      the unreadable images and why, when there were any
  calibration.json                 the temperature fitted on the validation images
  thresholds.json                  a multi-label run's threshold per label, tuned for F1 on the validation images
  parity-inputs.safetensors        a few validation images and the calibrated probabilities, for export's check
  metrics.json, predictions.csv, report.html   the best weights evaluated on the validation images
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from imgclf.config import Preprocessing, RunConfig, TrainConfig
from imgclf.data.folders import FolderIndex, SkippedFile
from imgclf.deploy.export import save_parity_inputs
from imgclf.deploy.predictor import Run
from imgclf.evaluation.evaluate import Evaluation, write_evaluation
from imgclf.evaluation.multi_label import MultiLabelEvaluation, write_multi_label_evaluation
from imgclf.evaluation.plots import plot_metric
from imgclf.evaluation.report import REPORT_FILE, write_report
from imgclf.files import atomic_write_text, save_figure, save_tensors, write_csv, write_json
from imgclf.models import summarize
from imgclf.runs import CALIBRATION_FILE, CONFIG_FILE, THRESHOLDS_FILE, WEIGHTS_FILE, RunError, load_tensors
from imgclf.training import checkpoints
from imgclf.training.checkpoints import TrainingProgress
from imgclf.training.phases import Phase, PhaseSetup

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
SKIPPED_FILE = "skipped.csv"


def claim_run_dir(config: TrainConfig) -> tuple[Path, bool]:
    """The run directory, made now so that no other run can take it, and whether this call made it.

    The default name has the time to the second; a run started in the same second gets a `-2`, `-3`, ... suffix.
    An `--out` folder may already exist, unless it holds a run with a saved epoch.
    """
    if config.out is not None:
        run_dir = Path(config.out)
        if (run_dir / CONFIG_FILE).exists() and checkpoints.has_saved_epoch(run_dir):
            raise RunError(
                f"{run_dir} already holds a run. Received: --out={run_dir}. Choose a new folder, "
                "or continue that run with --resume."
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"--out must be a folder, and {run_dir} is a file. Received: --out={run_dir}.")
        existed = run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, not existed
    name = default_run_name(config.model)
    run_dir, suffix = Path("runs") / name, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir, True
        except FileExistsError:
            suffix += 1
            run_dir = Path("runs") / f"{name}-{suffix}"


def default_run_name(model: str) -> str:
    """A new run's name: the model and the time to the second, `efficientnet_lite0-20261125-101500`."""
    return f"{model.replace(':', '-').replace('/', '-')}-{datetime.now():%Y%m%d-%H%M%S}"


class RunWriter:
    """Writes a run directory as training goes (and reads its last epoch back to resume it).

    Under torchrun only the main process writes; the loop calls the writing methods there alone.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.skipped_count = 0
        """How many files `skipped.csv` lists."""

    def last_epoch_weights(self) -> dict[str, torch.Tensor]:
        """The whole model as the last saved epoch left it."""
        return checkpoints.load_last_epoch(self.run_dir)

    def restore_optimizer(self, setup: PhaseSetup, state: dict) -> None:
        """Give the phase's optimiser and gradient scaler their state at the last saved epoch (its `state.json`)."""
        checkpoints.restore_optimizer(self.run_dir, setup.optimizer, setup.scaler, state)

    def write_config(self, run_config: RunConfig) -> None:
        """`config.json`: enough to rebuild the run."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / CONFIG_FILE, run_config.to_dict())

    def write_skipped(self, skipped: list[SkippedFile]) -> None:
        """`skipped.csv`: each unreadable file once, with why; nothing when every file was read."""
        unique = {item.path: item.reason for item in skipped}
        self.skipped_count = len(unique)
        if unique:
            write_csv(self.run_dir / SKIPPED_FILE, ("file", "reason"), sorted(unique.items()))

    def start_phase(self, model: nn.Module, preprocessing: Preprocessing, phase: Phase, from_its_start: bool) -> None:
        """Keep the previous phase's best, describe the model as the phase trains it, and save the phase's start
        (`from_its_start`: False for a phase resumed midway, whose start is saved already)."""
        self.keep_best()  # before this phase's start replaces the previous phase's start
        atomic_write_text(self.run_dir / "summary.txt", summarize(model, preprocessing) + "\n")
        if from_its_start or not checkpoints.has_phase_start(self.run_dir):
            checkpoints.save_phase_start(self.run_dir, model, phase)

    def save_epoch(
        self, model: nn.Module, phase: Phase, setup: PhaseSetup, progress: TrainingProgress, best: bool
    ) -> None:
        """Save a finished epoch: its weights if they are the `best` yet, the checkpoint, and `history.csv`."""
        if best:
            checkpoints.save_best(self.run_dir, model, phase)
        state = progress.state(phase, setup.scaler)
        checkpoints.save_checkpoint(self.run_dir, model, phase, setup.optimizer, state)
        rows = [[record[column] for column in HISTORY_COLUMNS] for record in progress.history]
        write_csv(self.run_dir / "history.csv", HISTORY_COLUMNS, rows)

    def save_model(self, model: nn.Module) -> None:
        """`model.safetensors`: a model made without epochs (a `--preset` run's)."""
        save_tensors(self.run_dir / WEIGHTS_FILE, model.state_dict())

    def keep_best(self) -> None:
        """Complete `model.safetensors` from a phase's best epoch, if it is saved as the phase's changes only."""
        checkpoints.complete_best(self.run_dir)

    def write_plots(self, history: list[dict]) -> None:
        """`loss.png` and `accuracy.png`, training against validation, once there is an epoch to plot."""
        if history:
            save_figure(self.run_dir / "loss.png", plot_metric(history, "loss", "Training and validation loss"))
            accuracy = plot_metric(history, "accuracy", "Training and validation accuracy")
            save_figure(self.run_dir / "accuracy.png", accuracy)

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's whole model (after `keep_best`)."""
        return load_tensors(self.run_dir / WEIGHTS_FILE)

    def write_calibration(self, calibration: dict) -> None:
        """`calibration.json`: the fitted temperature, with the log-loss and ECE before and after."""
        write_json(self.run_dir / CALIBRATION_FILE, calibration)

    def write_parity_inputs(self, run: Run, index: FolderIndex, workers: int) -> None:
        """`parity-inputs.safetensors`: validation images of `index` with the calibrated `run`'s probabilities (on
        the CPU), so that export and every engine check parity on the run directory alone."""
        save_parity_inputs(run, index, workers)

    def write_thresholds(self, thresholds: dict[str, float]) -> None:
        """`thresholds.json`: a multi-label run's threshold per label."""
        write_json(self.run_dir / THRESHOLDS_FILE, thresholds)

    def write_multi_label_evaluation(self, run: Run, evaluation: MultiLabelEvaluation) -> None:
        """`metrics.json`, `predictions.csv` and `report.html` of a finished multi-label `run`."""
        write_multi_label_evaluation(evaluation, self.run_dir)
        write_report(run, evaluation, self.run_dir / REPORT_FILE)

    def write_evaluation(self, run: Run, evaluation: Evaluation) -> None:
        """`metrics.json`, `predictions.csv` and `report.html` of the finished `run`."""
        write_evaluation(evaluation, self.run_dir)
        write_report(run, evaluation, self.run_dir / REPORT_FILE)
