"""Evaluating a trained run on a folder: every metric of a labelled folder, predictions only for a flat one.

imgclf evaluate runs/efficientnet_lite0-20261125-101500 photos/test_set --tta
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.data.folders import DatasetError, FolderIndex, find_classes, index_folder, list_images
from imgclf.deploy.predictor import Prediction, Run
from imgclf.evaluation import metrics
from imgclf.files import write_csv, write_json

TOP_K = 5


@dataclass
class Evaluation:
    """The predictions for every image of a folder, and, when it is labelled, the metrics computed from them.

    `true_labels` is None for a flat folder of unlabelled images. Metrics use each image's most probable
    class, whatever the run's `--min-confidence`; the share it would call `unsure` is reported apart.
    """

    folder: str
    class_names: list[str]
    true_labels: list[int] | None
    predictions: list[Prediction]
    tta: bool = False
    min_confidence: float | None = None

    @property
    def labelled(self) -> bool:
        return self.true_labels is not None

    @property
    def scored(self) -> list[int]:
        """Positions of the images that could be read (unreadable ones have no prediction)."""
        return [i for i, p in enumerate(self.predictions) if p.error is None]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(true labels, top classes, probabilities) of the scored images."""
        rows = self.scored
        probabilities = np.array([[self.predictions[i].probabilities[c] for c in self.class_names] for i in rows])
        probabilities = probabilities.reshape(len(rows), len(self.class_names))
        true = np.array([self.true_labels[i] for i in rows] if self.labelled else [], dtype=np.int64)
        return true, probabilities.argmax(axis=1), probabilities

    @property
    def accuracy(self) -> float:
        true, predicted, _ = self.arrays()
        return metrics.accuracy(true, predicted)

    @property
    def confusion(self) -> np.ndarray:
        true, predicted, _ = self.arrays()
        return metrics.confusion_matrix(true, predicted, len(self.class_names))

    def misclassified(self) -> list[dict]:
        """The wrongly classified images, most confidently wrong first."""
        if not self.labelled:
            return []
        rows = []
        for i in self.scored:
            p, true = self.predictions[i], self.true_labels[i]
            top = max(self.class_names, key=p.probabilities.get)
            if top != self.class_names[true]:
                rows.append(
                    {
                        "file": p.file,
                        "true_label": self.class_names[true],
                        "predicted_label": top,
                        "probability": p.probabilities[top],
                        "probabilities": p.probabilities,
                    }
                )
        return sorted(rows, key=lambda row: -row["probability"])

    def to_dict(self) -> dict:
        """Everything `metrics.json` holds."""
        summary = {
            "folder": self.folder,
            "class_names": self.class_names,
            "images": len(self.predictions),
            "scored": len(self.scored),
            "unreadable": [{"file": p.file, "reason": p.error} for p in self.predictions if p.error is not None],
            "tta": self.tta,
            "min_confidence": self.min_confidence,
            "unsure": sum(p.index is None and p.error is None for p in self.predictions),
            "labelled": self.labelled,
        }
        true, predicted, probabilities = self.arrays()
        if not self.labelled or not len(true):
            return summary
        classes = len(self.class_names)
        per_class = metrics.per_class(true, predicted, self.class_names)
        return {
            **summary,
            "accuracy": metrics.accuracy(true, predicted),
            "macro_f1": float(np.mean([row["f1"] for row in per_class])),
            f"top_{TOP_K}_accuracy": metrics.top_k_accuracy(true, probabilities, TOP_K) if classes > TOP_K else None,
            "log_loss": metrics.log_loss(true, probabilities),
            "per_class": per_class,
            "confusion_matrix": self.confusion.tolist(),
            "confusion_matrix_normalized": metrics.normalize_rows(self.confusion).tolist(),
            "roc": metrics.roc(true, probabilities),
            "calibration": metrics.reliability(true, probabilities),
            "coverage": metrics.coverage(true, probabilities),
            "misclassified": self.misclassified(),
        }


def evaluate_folder(run: Run, folder: str | Path, batch_size: int = 32, tta: bool = False) -> Evaluation:
    """Predict every image of `folder`: `folder/<class>/...` (its classes among the run's) or a flat folder."""
    run.check_single_label("evaluating a folder")
    if not find_classes(folder):
        predictions = run.predict(list_images([folder]), batch_size=batch_size, tta=tta)
        return Evaluation(str(folder), run.class_names, None, predictions, tta, run.min_confidence)
    return evaluate_index(run, index_folder(folder), batch_size, tta)


def evaluate_index(run: Run, index: FolderIndex, batch_size: int = 32, tta: bool = False) -> Evaluation:
    """Predict and score the labelled images of `index`; its classes must be among the run's."""
    run.check_single_label("scoring labelled folders")
    unknown = [name for name in index.class_names if name not in run.class_names]
    if unknown:
        raise DatasetError(
            f"{index.root} has classes {index.class_names} but the model knows {run.class_names}; "
            f"{unknown} cannot be scored. Evaluate on images of the model's classes."
        )
    true_labels = [run.class_names.index(index.class_names[label]) for label in index.labels]
    predictions = run.predict(index.files, batch_size=batch_size, tta=tta)
    return Evaluation(index.root, run.class_names, true_labels, predictions, tta, run.min_confidence)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> None:
    """Write `metrics.json` and `predictions.csv` (file, true label, label, probability, one column per class)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", evaluation.to_dict())
    names = evaluation.class_names
    rows = [
        (
            p.file,
            names[evaluation.true_labels[i]] if evaluation.labelled else "",
            p.label or "",
            "" if p.probability is None else f"{p.probability:.6f}",
            *[f"{p.probabilities[c]:.6f}" if p.probabilities else "" for c in names],
            p.error or "",
        )
        for i, p in enumerate(evaluation.predictions)
    ]
    header = ("file", "true_label", "predicted_label", "probability", *[f"p_{c}" for c in names], "error")
    write_csv(out_dir / "predictions.csv", header, rows)
