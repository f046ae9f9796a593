"""Classification metrics on plain arrays: labels and probabilities in, numbers out.

Labels are class indices (N,); probabilities are (N, classes) with rows summing to 1. scikit-learn computes
what it has (precision / recall / F1, ROC, top-k); calibration and coverage are computed here.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def accuracy(true_labels: np.ndarray, predicted_labels: np.ndarray) -> float:
    """The fraction of predictions equal to the true label."""
    true_labels, predicted_labels = np.asarray(true_labels), np.asarray(predicted_labels)
    return float((true_labels == predicted_labels).mean()) if true_labels.size else float("nan")


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (classes × classes): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_labels), np.asarray(predicted_labels)), 1)
    return matrix


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a confusion matrix as recall per true class); empty rows stay 0."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def log_loss(true_labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-probability of the true class."""
    picked = np.asarray(probabilities)[np.arange(len(true_labels)), np.asarray(true_labels)]
    return float(-np.log(np.clip(picked, eps, 1.0)).mean())


def per_class(true_labels: np.ndarray, predicted_labels: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class (0 where a class is never predicted)."""
    precision, recall, f1, support = _sklearn().precision_recall_fscore_support(
        true_labels, predicted_labels, labels=range(len(class_names)), zero_division=0
    )
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]


def roc(true_labels: np.ndarray, probabilities: np.ndarray) -> dict | None:
    """Two classes: the ROC curve of class 1's probability and its AUC; None when a class is absent."""
    true_labels = np.asarray(true_labels)
    if np.asarray(probabilities).shape[1] != 2 or len(np.unique(true_labels)) < 2:
        return None
    scores = np.asarray(probabilities)[:, 1]
    false_positive, true_positive, thresholds = _sklearn().roc_curve(true_labels, scores)
    return {
        "auc": float(_sklearn().roc_auc_score(true_labels, scores)),
        "false_positive_rate": false_positive.tolist(),
        "true_positive_rate": true_positive.tolist(),
        "thresholds": np.nan_to_num(thresholds, posinf=1.0).tolist(),
    }


def top_k_accuracy(true_labels: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """The fraction of images whose true class is among the `k` most probable."""
    classes = np.arange(np.asarray(probabilities).shape[1])
    return float(_sklearn().top_k_accuracy_score(true_labels, probabilities, k=k, labels=classes))


def reliability(true_labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of the top class, and the per-bin confidence vs accuracy it comes from.

    Images are binned by their top probability into `bins` equal-width bins over [0, 1]; ECE is the mean
    |accuracy − confidence| over bins, weighted by how many images each holds.
    """
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true_labels)
    bin_of = np.minimum((confidence * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = bin_of == b
        if not members.any():
            continue
        bin_confidence, bin_accuracy = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.mean() * abs(bin_accuracy - bin_confidence)
        table.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": int(members.sum()),
                "confidence": bin_confidence,
                "accuracy": bin_accuracy,
            }
        )
    return {"ece": float(ece), "bins": table}


def coverage(true_labels: np.ndarray, probabilities: np.ndarray, thresholds=CONFIDENCE_THRESHOLDS) -> list[dict]:
    """For each threshold: the share of images whose top probability reaches it, and their accuracy.

    The rest would be labelled `unsure` by `--min-confidence`; accuracy is NaN when no image is covered.
    """
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true_labels)
    rows = []
    for threshold in thresholds:
        covered = confidence >= threshold
        rows.append(
            {
                "threshold": threshold,
                "coverage": float(covered.mean()) if len(covered) else float("nan"),
                "accuracy": float(correct[covered].mean()) if covered.any() else float("nan"),
            }
        )
    return rows


def _sklearn():
    """scikit-learn's metrics, imported when first needed: the import takes about 0.8 s, which every command
    (even `imgclf --help`) paid when it was at the top of this module."""
    from sklearn import metrics

    return metrics
