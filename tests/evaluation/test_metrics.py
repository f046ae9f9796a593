"""Scoring metrics, each worked out by hand on six images of three classes."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.evaluation import metrics

# Six images of three classes, worked out by hand below.
TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1],  # right, confidence 0.7
        [0.3, 0.6, 0.1],  # wrong (→ 1), confidence 0.6
        [0.1, 0.8, 0.1],  # right, 0.8
        [0.2, 0.7, 0.1],  # right, 0.7
        [0.1, 0.1, 0.8],  # right, 0.8
        [0.5, 0.1, 0.4],  # wrong (→ 0), 0.5
    ]
)
PREDICTED = PROBABILITIES.argmax(axis=1)  # [0, 1, 1, 1, 2, 0]


def test_accuracy_and_confusion_by_hand():
    assert metrics.accuracy(TRUE, PREDICTED) == pytest.approx(4 / 6)
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_allclose(metrics.normalize_rows(confusion), [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])
    assert metrics.normalize_rows(np.zeros((2, 2), dtype=int)).tolist() == [[0, 0], [0, 0]]


def test_per_class_precision_recall_f1_by_hand():
    rows = metrics.per_class(TRUE, PREDICTED, ["a", "b", "c"])
    # a: predicted twice (1 right) → P 1/2, R 1/2; b: predicted 3 times (2 right) → P 2/3, R 1; c: P 1, R 1/2
    assert [r["precision"] for r in rows] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [r["recall"] for r in rows] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert [r["f1"] for r in rows] == pytest.approx([1 / 2, 0.8, 2 / 3])
    assert [r["support"] for r in rows] == [2, 2, 2]


def test_a_class_never_predicted_has_zero_precision_not_an_error():
    rows = metrics.per_class(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert rows[1]["precision"] == 0.0 and rows[1]["recall"] == 0.0


def test_log_loss_and_top_k_by_hand():
    expected = -np.mean(np.log([0.7, 0.3, 0.8, 0.7, 0.8, 0.4]))
    assert metrics.log_loss(TRUE, PROBABILITIES) == pytest.approx(expected)
    assert metrics.top_k_accuracy(TRUE, PROBABILITIES, 1) == pytest.approx(4 / 6)
    assert metrics.top_k_accuracy(TRUE, PROBABILITIES, 2) == pytest.approx(1.0)  # every true class is in the top 2


def test_roc_auc_by_hand():
    # Scores of class 1: positives 0.8, 0.4; negatives 0.3, 0.6. Pairs ranked right: (0.8 > both), (0.4 > 0.3)
    true = np.array([1, 1, 0, 0])
    scores = np.array([0.8, 0.4, 0.3, 0.6])
    roc = metrics.roc(true, np.stack([1 - scores, scores], axis=1))
    assert roc["auc"] == pytest.approx(3 / 4)
    assert roc["false_positive_rate"][0] == 0.0 and roc["true_positive_rate"][-1] == 1.0
    assert metrics.roc(TRUE, PROBABILITIES) is None  # three classes
    assert metrics.roc(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]])) is None  # one class present


def test_expected_calibration_error_by_hand():
    result = metrics.reliability(TRUE, PROBABILITIES, bins=10)
    # bins: 0.5 → [wrong]; 0.6 → [wrong]; 0.7 → [right, right]; 0.8 → [right, right]
    expected = (1 / 6) * 0.5 + (1 / 6) * 0.6 + (2 / 6) * 0.3 + (2 / 6) * 0.2
    assert result["ece"] == pytest.approx(expected)
    assert [b["count"] for b in result["bins"]] == [1, 1, 2, 2]
    assert [b["accuracy"] for b in result["bins"]] == [0.0, 0.0, 1.0, 1.0]


def test_coverage_by_hand():
    rows = {r["threshold"]: r for r in metrics.coverage(TRUE, PROBABILITIES, thresholds=(0.5, 0.7, 0.9))}
    assert rows[0.5]["coverage"] == 1.0 and rows[0.5]["accuracy"] == pytest.approx(4 / 6)
    assert rows[0.7]["coverage"] == pytest.approx(4 / 6) and rows[0.7]["accuracy"] == 1.0
    assert rows[0.9]["coverage"] == 0.0 and np.isnan(rows[0.9]["accuracy"])
