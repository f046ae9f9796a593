"""Classification metrics on plain arrays: labels and probabilities in, numbers out."""

from __future__ import annotations

import numpy as np


def accuracy(true_labels: np.ndarray, predicted_labels: np.ndarray) -> float:
    """The fraction of predictions equal to the true label."""
    true_labels, predicted_labels = np.asarray(true_labels), np.asarray(predicted_labels)
    return float((true_labels == predicted_labels).mean()) if true_labels.size else float("nan")


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (classes × classes): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_labels), np.asarray(predicted_labels)), 1)
    return matrix


def log_loss(true_labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-probability of the true class."""
    picked = np.asarray(probabilities)[np.arange(len(true_labels)), np.asarray(true_labels)]
    return float(-np.log(np.clip(picked, eps, 1.0)).mean())
