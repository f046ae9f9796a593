"""The runs in a folder, read from their files alone: `imgclf runs` lists them, `imgclf runs --compare A B`
sets two side by side.

imgclf runs                                # every run under runs/, oldest first
imgclf runs --compare runs/a runs/b

Only `config.json`, `history.csv` and `metrics.json` are read (no model is loaded, PyTorch is not imported), so a
listing of many runs is quick, and a damaged run is listed with what is wrong with it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imgclf.config import ConfigError, ImgclfError, RunConfig

CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "history.csv", "metrics.json"
RUN_MARKS = (CONFIG_FILE, HISTORY_FILE, "model.safetensors", "checkpoint")
"""A folder holding any of these is a run (a damaged one without `config.json`)."""


class RunsError(ImgclfError):
    """A folder of runs, or a run to compare, is not there."""


@dataclass(frozen=True)
class RunSummary:
    """One run as `imgclf runs` shows it: what could be read, and `problem`, what could not.

    `best_val_accuracy` is the kept weights' accuracy (`metrics.json`), else that of the epoch with the lowest
    val_loss (`history.csv`); `seconds` is the training time, the sum of the epochs'; `date` is when the last
    epoch ended.
    """

    run_dir: Path
    date: datetime
    model: str | None = None
    data: str | None = None
    epochs: int | None = None
    best_val_accuracy: float | None = None
    seconds: float | None = None
    problem: str | None = None
    options: dict[str, object] = field(default_factory=dict)
    """The training options, the augmentation's flattened (`augment.zoom`)."""
    dataset: dict[str, object] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    """The kept weights' accuracy, macro_f1, log_loss and ece on the validation images, from `metrics.json`."""

    @property
    def name(self) -> str:
        return self.run_dir.name

    def to_dict(self) -> dict[str, object]:
        """The listing's columns, as `--format json` and `csv` write them."""
        return {
            "run": self.name,
            "path": str(self.run_dir),
            "model": self.model,
            "data": self.data,
            "date": self.date.isoformat(timespec="seconds"),
            "epochs": self.epochs,
            "best_val_accuracy": self.best_val_accuracy,
            "training_seconds": self.seconds,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class RunsListing:
    """The runs of a folder by date, and how many of its folders are not runs (`passed_over`)."""

    folder: Path
    runs: list[RunSummary]
    passed_over: int


def list_runs(folder: str | Path = "runs") -> RunsListing:
    """Every run directory directly under `folder`, oldest first; other folders are counted, not read.

    >>> listing = list_runs("runs")
    >>> [(run.name, run.best_val_accuracy) for run in listing.runs]
    [('seed-cnn-20250101-120000', 0.85), ('efficientnet_lite0-20250102-090000', 0.95)]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunsError(f"{folder} is not a folder. Received: DIR={folder}. Give the folder the runs are in (runs/).")
    folders = [path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")]
    runs = [read_summary(path) for path in folders if is_run(path)]
    return RunsListing(folder, sorted(runs, key=lambda run: (run.date, run.name)), len(folders) - len(runs))


def is_run(path: Path) -> bool:
    """Whether `path` looks like a run directory (see `RUN_MARKS`)."""
    return any((path / mark).exists() for mark in RUN_MARKS)


def read_summary(run_dir: str | Path) -> RunSummary:
    """What `run_dir`'s files say of the run; a file that cannot be read becomes the summary's `problem`."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    config = _attempt(problems, lambda: _read_config(run_dir))
    history = _attempt(problems, lambda: _read_history(run_dir))
    scores = _attempt(problems, lambda: _read_scores(run_dir)) or {}
    best = scores.get("accuracy")
    if best is None and history:
        best = min(history, key=lambda row: row["val_loss"])["val_accuracy"]
    return RunSummary(
        run_dir=run_dir,
        date=_last_written(run_dir),
        model=config.train.model if config else None,
        data=(config.train.labels or config.train.data) if config else None,
        epochs=len(history) if history is not None else None,
        best_val_accuracy=best,
        seconds=sum(row["seconds"] for row in history) if history is not None else None,
        problem="; ".join(problems) or None,
        options=config.train.to_flat_dict() if config else {},
        dataset=_dataset_sizes(config) if config else {},
        scores=scores,
    )


def _attempt(problems: list[str], read: Callable[[], object]) -> object | None:
    """`read()`, or None with its error added to `problems` when the file is damaged."""
    try:
        return read()
    except RunsError as error:
        problems.append(str(error))
        return None


def _read_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunsError(f"{CONFIG_FILE} is missing")
    try:
        return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, RecursionError, ConfigError) as error:
        raise RunsError(f"{CONFIG_FILE} is damaged ({_reason(error)})") from None


def _read_history(run_dir: Path) -> list[dict[str, float]] | None:
    """`history.csv`'s rows as numbers; None when no epoch has ended yet."""
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return None
    columns = ("epoch", "val_loss", "val_accuracy", "seconds")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            return [{name: float(row[name]) for name in columns} for row in csv.DictReader(file)]
    except (ValueError, KeyError, TypeError, csv.Error) as error:
        raise RunsError(f"{HISTORY_FILE} is damaged ({_reason(error)})") from None


def _read_scores(run_dir: Path) -> dict[str, float | None]:
    """The headline numbers of `metrics.json` (empty before the run is finished)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        scores = {name: values.get(name) for name in ("accuracy", "macro_f1", "log_loss")}
        scores["ece"] = (values.get("calibration") or {}).get("ece")
    except (ValueError, AttributeError, RecursionError) as error:
        raise RunsError(f"{METRICS_FILE} is damaged ({_reason(error)})") from None
    if not all(value is None or type(value) in (int, float) for value in scores.values()):
        raise RunsError(f"{METRICS_FILE} is damaged (a score is not a number)")
    return scores


def _reason(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if isinstance(error, KeyError):
        return f"no {error}"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _last_written(run_dir: Path) -> datetime:
    """When the run last wrote an epoch (`history.csv`), else its config, else the folder itself."""
    for path in (run_dir / HISTORY_FILE, run_dir / CONFIG_FILE, run_dir):
        if path.exists():
            return datetime.fromtimestamp(path.stat().st_mtime)
    raise RunsError(f"{run_dir} is gone")


def _dataset_sizes(config: RunConfig) -> dict[str, object]:
    return {
        "classes": len(config.class_names),
        "training images": config.dataset.get("train_count"),
        "validation images": config.dataset.get("val_count"),
        **({"labels SHA-256": config.dataset["labels_sha256"]} if "labels_sha256" in config.dataset else {}),
    }


@dataclass(frozen=True)
class ComparedValue:
    """One line of a comparison: `section` (options, data, scores, training), what is compared and each run's
    value; `better` is 0 or 1 for the run whose value is better, None when neither is (or it has no better)."""

    section: str
    name: str
    first: object
    second: object
    better: int | None = None


# The compared numbers that have a better side: True where higher is better.
HIGHER_IS_BETTER = {"accuracy": True, "macro F1": True, "log loss": False, "ECE": False, "training time": False}
SCORE_NAMES = {"accuracy": "accuracy", "macro_f1": "macro F1", "log_loss": "log loss", "ece": "ECE"}


def find_run(name: str | Path, folder: str | Path = "runs") -> Path:
    """The run directory `name` names: a path, or a run's name in `folder`; raises `RunsError` if neither."""
    for candidate in (Path(name), Path(folder) / name):
        if candidate.is_dir() and is_run(candidate):
            return candidate
    raise RunsError(
        f"{name} is not a run directory, nor the name of one in {folder}. Received: --compare {name}. "
        f"Give a folder made by imgclf train (imgclf runs {folder} lists them)."
    )


def compare_runs(first: RunSummary, second: RunSummary) -> list[ComparedValue]:
    """The two runs side by side: the options that differ, the data's size, scores, epochs and time."""
    names = [name for name in first.options if first.options.get(name) != second.options.get(name)]
    names += [name for name in second.options if name not in first.options]
    rows = [ComparedValue("options", name, first.options.get(name), second.options.get(name)) for name in names]
    sizes = dict.fromkeys([*first.dataset, *second.dataset])
    rows += [ComparedValue("data", name, first.dataset.get(name), second.dataset.get(name)) for name in sizes]
    pairs = [(SCORE_NAMES[key], first.scores.get(key), second.scores.get(key)) for key in SCORE_NAMES]
    pairs += [("epochs", first.epochs, second.epochs), ("training time", first.seconds, second.seconds)]
    rows += [ComparedValue("results", name, a, b, _better(name, a, b)) for name, a, b in pairs]
    if first.problem or second.problem:
        rows.append(ComparedValue("problems", "problem", first.problem, second.problem))
    return rows


def _better(name: str, first: object, second: object) -> int | None:
    """0 or 1 for the better of two numbers by `HIGHER_IS_BETTER`; None for a tie, a missing value or no order."""
    if name not in HIGHER_IS_BETTER or first is None or second is None or first == second:
        return None
    return 0 if (first > second) == HIGHER_IS_BETTER[name] else 1
