"""Multi-label thresholds and metrics on small arrays whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.deploy.predictor import Prediction
from imgclf.evaluation.multi_label import (
    DEFAULT_THRESHOLD,
    MultiLabelEvaluation,
    multi_label_metrics,
    tune_thresholds,
)

TRUTH = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
PROBABILITIES = np.array([[0.9, 0.2, 0.6], [0.4, 0.8, 0.3], [0.3, 0.7, 0.1], [0.35, 0.1, 0.2]])


def test_each_threshold_maximises_its_classs_f1_halfway_between_two_probabilities():
    thresholds = tune_thresholds(TRUTH, PROBABILITIES)

    # class 0: keeping 0.9 and 0.4 catches both positives and no negative (0.35 is the next one down)
    assert thresholds[0] == pytest.approx((0.4 + 0.35) / 2)
    assert thresholds[1] == pytest.approx((0.7 + 0.2) / 2)
    assert thresholds[2] == pytest.approx((0.6 + 0.3) / 2)


def test_a_class_without_positives_keeps_the_default_threshold():
    truth = np.array([[1, 0], [0, 0]])

    assert tune_thresholds(truth, np.array([[0.8, 0.9], [0.1, 0.2]]))[1] == DEFAULT_THRESHOLD


def test_metrics_at_the_thresholds():
    values = multi_label_metrics(TRUTH, PROBABILITIES, [0.5, 0.5, 0.5], ["a", "b", "c"])

    # predicted: [1,0,1], [0,1,0], [0,1,0], [0,0,0]: image 2 misses class a
    assert values["subset_accuracy"] == pytest.approx(3 / 4)
    assert values["hamming_loss"] == pytest.approx(1 / 12)
    assert values["per_class"][0] == pytest.approx(
        {
            "class": "a",
            "threshold": 0.5,
            "precision": 1.0,
            "recall": 0.5,
            "f1": 2 / 3,
            "average_precision": 1.0,
            "support": 2,
        }
    )
    assert values["mean_average_precision"] == pytest.approx(1.0)  # every positive ranks above every negative
    assert values["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1))


def test_mean_average_precision_leaves_out_a_class_without_positives():
    truth = np.array([[1, 0], [0, 0], [1, 0]])
    probabilities = np.array([[0.9, 0.5], [0.8, 0.4], [0.3, 0.1]])

    values = multi_label_metrics(truth, probabilities, [0.5, 0.5], ["a", "b"])

    assert values["per_class"][1]["average_precision"] is None
    # a: ranked 0.9 (right), 0.8 (wrong), 0.3 (right): AP = (1 + 2/3) / 2
    assert values["mean_average_precision"] == pytest.approx((1 + 2 / 3) / 2)


def test_the_mistaken_images_are_those_given_a_label_they_lack_or_missing_one_they_have():
    classes = ["a", "b", "c"]

    def predicted(file: str, labels: list[str] | None, error: str | None = None) -> Prediction:
        return Prediction(file, None, None, None, {}, error=error, labels=labels)

    predictions = [
        predicted("right.jpg", ["c", "a"]),  # truth a, c: the order does not matter
        predicted("missed.jpg", ["a"]),  # truth a, b
        predicted("given-wrongly.jpg", ["b", "c"]),  # truth b
        predicted("none-right.jpg", []),  # truth: none
        predicted("unreadable.jpg", None, error="not an image"),
    ]
    truth = np.vstack([TRUTH, [[1, 0, 0]]])
    evaluation = MultiLabelEvaluation("labels.csv", classes, [0.5] * 3, truth, predictions)

    assert evaluation.mistaken() == ["missed.jpg", "given-wrongly.jpg"]
