"""Evaluating a trained run on a labelled folder: accuracy, confusion matrix, one row per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf import metrics
from imgclf.data import DatasetError, index_folder
from imgclf.runs import Prediction, Run, write_csv, write_json


@dataclass
class Evaluation:
    """The predictions for every image of a labelled folder and the metrics computed from them."""

    folder: str
    class_names: list[str]
    true_labels: list[int]
    predictions: list[Prediction]

    @property
    def scored(self) -> list[int]:
        """Positions of the images that could be read (unreadable ones have no prediction)."""
        return [i for i, p in enumerate(self.predictions) if p.error is None]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self.scored
        true = np.array([self.true_labels[i] for i in rows], dtype=np.int64)
        predicted = np.array([self.predictions[i].index for i in rows], dtype=np.int64)
        probabilities = np.array([[self.predictions[i].probabilities[c] for c in self.class_names] for i in rows])
        return true, predicted, probabilities.reshape(len(rows), len(self.class_names))

    @property
    def accuracy(self) -> float:
        true, predicted, _ = self._arrays()
        return metrics.accuracy(true, predicted)

    @property
    def confusion(self) -> np.ndarray:
        true, predicted, _ = self._arrays()
        return metrics.confusion_matrix(true, predicted, len(self.class_names))

    def to_dict(self) -> dict:
        true, predicted, probabilities = self._arrays()
        return {
            "folder": self.folder,
            "class_names": self.class_names,
            "images": len(self.predictions),
            "scored": len(true),
            "unreadable": [{"file": p.file, "reason": p.error} for p in self.predictions if p.error is not None],
            "accuracy": self.accuracy,
            "log_loss": metrics.log_loss(true, probabilities) if len(true) else None,
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_folder(run: Run, folder: str | Path, batch_size: int = 64) -> Evaluation:
    """Predict every image of `folder/<class>/...`; its classes must be among the run's classes."""
    index = index_folder(folder)
    unknown = [name for name in index.class_names if name not in run.class_names]
    if unknown:
        raise DatasetError(
            f"{folder} has classes {index.class_names} but the model knows {run.class_names}; "
            f"{unknown} cannot be scored. Evaluate on a folder with the model's class sub-folders."
        )
    true_labels = [run.class_names.index(index.class_names[label]) for label in index.labels]
    predictions = run.predict(index.files, batch_size=batch_size)
    return Evaluation(str(folder), run.class_names, true_labels, predictions)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> None:
    """Write `metrics.json` and `predictions.csv` (file, true label, predicted label, probability)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", evaluation.to_dict())
    rows = [
        (
            p.file,
            evaluation.class_names[true],
            p.label or "",
            "" if p.probability is None else f"{p.probability:.6f}",
            p.error or "",
        )
        for p, true in zip(evaluation.predictions, evaluation.true_labels)
    ]
    write_csv(out_dir / "predictions.csv", ("file", "true_label", "predicted_label", "probability", "error"), rows)
