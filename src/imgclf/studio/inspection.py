"""What a run's pages show, read from its files alone (no model is loaded).

    run_detail(project, "seed-cnn-20261203-101500")   # config, metrics, history, confusion, calibration, coverage
    cell_images(project, run, "cars", "planes")       # the validation images of one confusion cell

A run is found by its name under the project's `runs/` folder (`run_folder`). The validation predictions come
from the run's `predictions.csv`: a row's class is its most probable one, as the confusion matrix counts it
(whatever `--min-confidence`). Images are named by their id, the path relative to the project's data folder,
so the page can show them through the data routes; an image from outside the data folder has no id.

A multi-label run (trained on a labels CSV: `imgclf train --labels`) has no confusion matrix, calibration or
unsure threshold: its page gives each label's threshold and its scores (`metrics["per_class"]`), and its
mistakes are the images whose set of labels it got wrong (`wrong_label_sets`).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.config import RunConfig
from imgclf.evaluation import metrics
from imgclf.evaluation.runs_index import RunsError, RunSummary, list_runs
from imgclf.runs import CALIBRATION_FILE, CONFIG_FILE, RunError, read_config, read_history, read_thresholds
from imgclf.studio.workspace import NotFound, Project, StudioError, check_name

METRICS_FILE, PREDICTIONS_FILE = "metrics.json", "predictions.csv"
COVERAGE_POINTS = 101
"""The most points of the coverage curve; beyond it the thresholds are quantiles of the confidences."""
SHOWN_ELSEWHERE = (
    "confusion_matrix",
    "confusion_matrix_normalized",
    "calibration",
    "coverage",
    "misclassified",
    "roc",
)
"""Parts of `metrics.json` that `run_detail` gives in their own keys (or, for the long lists, not at all)."""


@dataclass(frozen=True)
class ValidationImage:
    """One row of `predictions.csv`: the image, its true class, its most probable class and that probability."""

    file: str
    id: str | None
    true: int
    predicted: int
    probabilities: tuple[float, ...]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted]

    def to_dict(self, class_names: list[str]) -> dict[str, object]:
        """The image as the page lists it: id, file name, true and predicted class, confidence."""
        return {
            "id": self.id,
            "name": Path(self.file).name,
            "file": self.file,
            "true": class_names[self.true],
            "predicted": class_names[self.predicted],
            "confidence": self.confidence,
        }


def run_folder(project: Project, name: str) -> Path:
    """The folder of the run called `name` in `project`; `NotFound` when there is none."""
    folder = project.inside(Path("runs") / check_name(name, "run"))
    if not (folder / CONFIG_FILE).is_file():
        raise NotFound(f"There is no run {name!r} in the project {project.name!r}. Choose one of its runs.")
    return folder


def is_multi_label(folder: Path) -> bool:
    """Whether the run in `folder` is multi-label (one sigmoid per label, `thresholds.json`)."""
    return _config(folder).train.multi_label


def list_project_runs(project: Project) -> list[dict[str, object]]:
    """The project's runs, oldest first, as the runs table shows them."""
    if not project.runs_dir.is_dir():
        return []
    try:
        runs = list_runs(project.runs_dir).runs
    except RunsError:  # the folder went away meanwhile
        return []
    return [_run_row(summary) for summary in runs]


def _run_row(summary: RunSummary) -> dict[str, object]:
    finished = (summary.run_dir / METRICS_FILE).is_file()
    state = "damaged" if summary.problem else "finished" if finished else "unfinished"
    multi_label = bool(summary.options.get("multi_label"))
    return {
        "name": summary.name,
        "model": summary.model,
        "data": summary.data,
        "date": summary.date.isoformat(timespec="seconds"),
        "epochs": summary.epochs,
        "accuracy": summary.best_val_accuracy,
        "multi_label": multi_label,
        "mean_average_precision": _mean_average_precision(summary.run_dir) if multi_label and finished else None,
        "time_s": summary.seconds,
        "state": state,
        "problem": summary.problem,
    }


def _mean_average_precision(folder: Path) -> float | None:
    """A finished multi-label run's mean average precision on its validation images; None when it is unreadable."""
    try:
        return (_read_json(folder / METRICS_FILE) or {}).get("mean_average_precision")
    except StudioError:  # the runs table shows the run as it is; its page says what is wrong
        return None


def run_detail(project: Project, name: str) -> dict[str, object]:
    """Everything a run's page shows: its options, classes, scores, epochs, confusion matrix, calibration, and the
    coverage and accuracy the unsure threshold would give (see `coverage_curve`); for a multi-label run, each
    label's threshold and scores instead (`multi_label_detail`)."""
    folder = run_folder(project, name)
    config = _config(folder)
    scores = _read_json(folder / METRICS_FILE) or {}
    if config.train.multi_label:
        return multi_label_detail(folder, name, config, scores)
    calibration = _read_json(folder / CALIBRATION_FILE)
    reliability = scores.get("calibration") or {}
    return {
        "name": name,
        "config": config_summary(config),
        "classes": config.class_names,
        "metrics": _headline(scores),
        "history": read_history(folder),
        "confusion": scores.get("confusion_matrix"),
        "calibration": None if calibration is None and not reliability else {**(calibration or {}), **reliability},
        "coverage": coverage_curve(validation_images(project, folder, config)),
        "min_confidence": config.train.min_confidence,
        "multi_label": False,
    }


def multi_label_detail(folder: Path, name: str, config: RunConfig, scores: dict) -> dict[str, object]:
    """A multi-label run's page: `run_detail`'s keys, with `thresholds` (by label; None before the run is
    finished) and its scores in `metrics` (mean average precision, per-label precision, recall and F1 in
    `per_class`); it has no confusion matrix, calibration or coverage."""
    try:
        thresholds = dict(zip(config.class_names, read_thresholds(folder, config.class_names))) if scores else None
    except RunError as error:
        raise StudioError(str(error)) from None
    return {
        "name": name,
        "config": config_summary(config),
        "classes": config.class_names,
        "multi_label": True,
        "thresholds": thresholds,
        "metrics": scores,
        "history": read_history(folder),
        "confusion": None,
        "calibration": None,
        "coverage": [],
        "min_confidence": None,
    }


def _headline(scores: dict) -> dict:
    """`metrics.json` less the parts given apart, with the ROC curve's area; empty before the run is finished."""
    if not scores:
        return {}
    return {key: value for key, value in scores.items() if key not in SHOWN_ELSEWHERE} | {
        "auc": (scores.get("roc") or {}).get("auc")
    }


def _config(folder: Path) -> RunConfig:
    try:
        return read_config(folder)
    except RunError as error:
        raise StudioError(str(error)) from None


def config_summary(config: RunConfig) -> dict[str, object]:
    """The run's training options in one level (`augment.zoom`, ...), with its input size and image counts."""
    return {
        **config.train.to_flat_dict(),
        "image_size": config.preprocessing.image_size,
        "resize": config.preprocessing.resize,
        "training_images": config.dataset.get("train_count"),
        "validation_images": config.dataset.get("val_count"),
    }


def _read_json(path: Path) -> dict | None:
    """The object in the run's JSON file `path`; None when there is none; `StudioError` when it is damaged."""
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise StudioError(f"{path} is damaged ({type(error).__name__}). Run `imgclf report {path.parent}`.") from None
    if not isinstance(values, dict):
        raise StudioError(f"{path} holds no JSON object. Run `imgclf report {path.parent}`.")
    return values


def validation_images(project: Project, folder: Path, config: RunConfig) -> list[ValidationImage]:
    """The scored rows of the run's `predictions.csv` (unreadable images left out); empty before it is written."""
    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        return []
    class_names = config.class_names
    columns = [f"p_{name}" for name in class_names]
    data_dir = project.data_dir.resolve()
    images = []
    try:
        with path.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                if row["error"] or not row["true_label"]:
                    continue
                probabilities = tuple(float(row[column]) for column in columns)
                true, top = class_names.index(row["true_label"]), int(np.argmax(probabilities))
                images.append(ValidationImage(row["file"], image_id(data_dir, row["file"]), true, top, probabilities))
    except (ValueError, KeyError, TypeError, csv.Error) as error:
        raise StudioError(f"{path} is damaged ({error!r}). Run `imgclf report {folder}` to write it again.") from None
    return images


def image_id(data_dir: Path, file: str) -> str | None:
    """`file`'s path relative to the (resolved) `data_dir`, with forward slashes; None when it lies elsewhere."""
    try:
        return Path(os.path.abspath(file)).resolve().relative_to(data_dir).as_posix()
    except ValueError:
        return None


def coverage_curve(images: list[ValidationImage], points: int = COVERAGE_POINTS) -> list[dict[str, float]]:
    """The share of validation images an unsure threshold keeps (`coverage`) and their accuracy, for thresholds
    from the highest confidence down to the lowest (coverage 1).

    Each threshold is the confidence of a validation image, so every point is one a slider can reach; there are
    at most `points`.
    """
    if not images:
        return []
    confidence = np.array([image.confidence for image in images])
    thresholds = np.unique(confidence)
    if len(thresholds) > points:
        thresholds = np.unique(np.quantile(confidence, np.linspace(0, 1, points), method="inverted_cdf"))
    true = np.array([image.true for image in images])
    probabilities = np.array([image.probabilities for image in images])
    return metrics.coverage(true, probabilities, thresholds[::-1].tolist())


def cell_images(project: Project, name: str, true: str, predicted: str) -> list[dict[str, object]]:
    """The validation images of class `true` whose most probable class is `predicted`, most confident first."""
    folder = run_folder(project, name)
    config = _config(folder)
    if config.train.multi_label:
        raise StudioError(
            f"The run {name!r} is multi-label, so it has no confusion matrix. Received: true={true!r}, "
            f"predicted={predicted!r}. Ask for wrong=1: the photos whose labels it got wrong."
        )
    names = config.class_names
    for value, what in ((true, "true"), (predicted, "predicted")):
        if value not in names:
            raise StudioError(f"The run has no class {value!r}. Received: {what}={value!r}. Choose one of {names}.")
    wanted = (names.index(true), names.index(predicted))
    cell = [image for image in validation_images(project, folder, config) if (image.true, image.predicted) == wanted]
    return [image.to_dict(names) for image in sorted(cell, key=lambda image: -image.confidence)]


def most_wrong(project: Project, name: str, limit: int) -> list[dict[str, object]]:
    """The `limit` validation images the run classifies wrong with the highest confidence (for a multi-label run,
    see `wrong_label_sets`)."""
    folder = run_folder(project, name)
    config = _config(folder)
    if config.train.multi_label:
        return wrong_label_sets(project, folder, config, limit)
    wrong = [image for image in validation_images(project, folder, config) if image.true != image.predicted]
    return [image.to_dict(config.class_names) for image in sorted(wrong, key=lambda image: -image.confidence)[:limit]]


def wrong_label_sets(project: Project, folder: Path, config: RunConfig, limit: int) -> list[dict[str, object]]:
    """The `limit` validation images whose set of labels the multi-label run got wrong, surest mistake first.

    An image's `true` and `predicted` are its label sets joined by `;`; `confidence` is how sure its surest
    wrong call was: the probability of a label predicted wrongly, or one minus that of a label missed. Its `id`
    is None unless it lies in a folder below the data folder (the page has no thumbnail of it then).
    """
    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        return []
    data_dir = project.data_dir.resolve()
    try:
        with path.open(newline="", encoding="utf-8") as file:
            mistakes = [_label_set_mistake(row, data_dir) for row in csv.DictReader(file)]
    except (ValueError, KeyError, TypeError, csv.Error) as error:
        raise StudioError(f"{path} is damaged ({error!r}). Run `imgclf report {folder}` to write it again.") from None
    wrong = [mistake for mistake in mistakes if mistake is not None]
    return sorted(wrong, key=lambda image: -image["confidence"])[:limit]


def _label_set_mistake(row: dict[str, str], data_dir: Path) -> dict[str, object] | None:
    """A row of a multi-label run's `predictions.csv` as the page lists it; None when its labels are right."""
    true, predicted = (
        {label for label in row[column].split(";") if label} for column in ("true_labels", "predicted_labels")
    )
    if row["error"] or true == predicted:
        return None
    sure = max(abs(float(row[f"p_{label}"]) - (label in true)) for label in true ^ predicted)
    found = image_id(data_dir, row["file"])
    return {
        # The page shows photos of class folders (CLASS/NAME); a labels CSV's photos may lie in data/ itself.
        "id": found if found is not None and "/" in found else None,
        "name": Path(row["file"]).name,
        "file": row["file"],
        "true": row["true_labels"],
        "predicted": row["predicted_labels"],
        "confidence": sure,
    }


def data_image(project: Project, image: object) -> Path:
    """The file of the project's data folder that the image id `image` names; `NotFound` when there is none."""
    if not isinstance(image, str) or not image:
        raise StudioError(f"Name the image by its id (CLASS/NAME.jpg). Received: image={image!r}.")
    path = project.inside(Path("data") / image)
    if not path.is_relative_to(project.data_dir.resolve()) or not path.is_file():
        raise NotFound(f"There is no image {image!r} in the data of the project {project.name!r}.")
    return path
