"""Multi-label scores: per-class thresholds tuned for F1, and the metrics multi-label users expect.

Truth and predictions are 0/1 arrays (N, classes); probabilities are each class's sigmoid (N, classes), rows not
summing to 1. scikit-learn computes average precision, precision / recall / F1, subset accuracy and Hamming loss.

imgclf train --labels labels.csv     # a label cell "shirt;hat": thresholds.json, metrics.json, predictions.csv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import metrics as sk

from imgclf.data.folders import DatasetError, FolderIndex, label_set
from imgclf.deploy.predictor import Prediction, Run
from imgclf.files import write_csv, write_json

DEFAULT_THRESHOLD = 0.5
"""A class's threshold when the validation images give no positive to tune it on."""


def tune_thresholds(truth: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """Each class's threshold (predicted when its probability is at least that) with the highest F1 on `truth`.

    Ties go to the higher threshold (fewer false positives); a class without positives keeps 0.5. The threshold
    lies halfway between the lowest probability it keeps and the next one down, so that another engine's last
    digits do not move an image across it.

    >>> tune_thresholds(np.array([[1], [0], [1]]), np.array([[0.9], [0.4], [0.3]]))
    [0.15]
    """
    thresholds = []
    for column in range(truth.shape[1]):
        if not truth[:, column].any():
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, candidates = sk.precision_recall_curve(truth[:, column], probabilities[:, column])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = np.flatnonzero(f1 == f1.max())[-1]
        below = probabilities[:, column][probabilities[:, column] < candidates[best]]
        thresholds.append(float((candidates[best] + (below.max() if below.size else 0.0)) / 2))
    return thresholds


def multi_label_metrics(
    truth: np.ndarray, probabilities: np.ndarray, thresholds: list[float], class_names: list[str]
) -> dict:
    """Mean average precision (over the classes with a positive), per-class precision / recall / F1 / AP at
    `thresholds`, micro and macro F1, subset accuracy (every label right) and Hamming loss."""
    predicted = (probabilities >= np.asarray(thresholds)).astype(int)
    precision, recall, f1, support = sk.precision_recall_fscore_support(truth, predicted, zero_division=0)
    present = truth.any(axis=0)
    average_precision = [
        float(sk.average_precision_score(truth[:, c], probabilities[:, c])) if present[c] else None
        for c in range(truth.shape[1])
    ]
    per_class = [
        {
            "class": name,
            "threshold": thresholds[c],
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "average_precision": average_precision[c],
            "support": int(support[c]),
        }
        for c, name in enumerate(class_names)
    ]
    return {
        "images": len(truth),
        "mean_average_precision": float(np.mean([ap for ap in average_precision if ap is not None])),
        "subset_accuracy": float(sk.accuracy_score(truth, predicted)),
        "hamming_loss": float(sk.hamming_loss(truth, predicted)),
        "micro_f1": float(sk.f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
    }


def truth_of(index: FolderIndex, class_names: list[str]) -> np.ndarray:
    """The multi-label `index`'s label sets as 0/1 (images, `class_names`); raises `DatasetError` when the index
    has a class that `class_names` lacks."""
    unknown = [name for name in index.class_names if name not in class_names]
    if unknown:
        raise DatasetError(
            f"{index.root} has labels {index.class_names} but the model knows {class_names}; {unknown} cannot be "
            "scored. Evaluate on images of the model's labels."
        )
    columns = [class_names.index(name) for name in index.class_names]
    truth = np.zeros((len(index.files), len(class_names)), dtype=int)
    for row, label in enumerate(index.labels):
        truth[row, [columns[c] for c in label_set(label)]] = 1
    return truth


@dataclass
class MultiLabelEvaluation:
    """A multi-label run's predictions for labelled images (`truth` 0/1 by the run's classes), with the files
    it could not read left out of the scores."""

    source: str
    class_names: list[str]
    thresholds: list[float]
    truth: np.ndarray
    predictions: list[Prediction]

    def to_dict(self) -> dict:
        read = [i for i, p in enumerate(self.predictions) if p.error is None]
        probabilities = np.array([[self.predictions[i].probabilities[c] for c in self.class_names] for i in read])
        scores = multi_label_metrics(self.truth[read], probabilities, self.thresholds, self.class_names)
        return {"source": self.source, "multi_label": True, "unreadable": len(self.predictions) - len(read), **scores}

    def mistaken(self) -> list[str]:
        """The readable images given a label they do not have or missing one they have, in order."""
        truths = [{name for name, given in zip(self.class_names, row) if given} for row in self.truth]
        return [p.file for p, truth in zip(self.predictions, truths) if p.error is None and set(p.labels) != truth]


def evaluate_multi_label(run: Run, index: FolderIndex, batch_size: int = 32) -> MultiLabelEvaluation:
    """Predict the images of the multi-label `index` with `run` (whose classes are the index's)."""
    truth = truth_of(index, run.class_names)
    predictions = run.predict(index.files, batch_size=batch_size)
    return MultiLabelEvaluation(index.root, run.class_names, run.thresholds, truth, predictions)


def write_multi_label_evaluation(evaluation: MultiLabelEvaluation, out_dir: str | Path) -> None:
    """Write `metrics.json` and `predictions.csv` (file, true labels, predicted labels, one column per class)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", evaluation.to_dict())
    names = evaluation.class_names
    rows = [
        (
            p.file,
            ";".join(name for name, is_true in zip(names, evaluation.truth[i]) if is_true),
            p.label or "",
            *[f"{p.probabilities[c]:.6f}" if p.probabilities else "" for c in names],
            p.error or "",
        )
        for i, p in enumerate(evaluation.predictions)
    ]
    header = ("file", "true_labels", "predicted_labels", *[f"p_{c}" for c in names], "error")
    write_csv(out_dir / "predictions.csv", header, rows)
