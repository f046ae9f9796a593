"""Scoring a run on a folder: metrics for two or more classes, top-5 accuracy, unlabelled folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.deploy.predictor import Prediction
from imgclf.evaluation.evaluate import Evaluation, evaluate_folder, write_evaluation
from imgclf.evaluation.report import build_report


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory) -> imgclf.Run:
    """seed-cnn on 3 colour classes, long enough to be mostly right."""
    root = tmp_path_factory.mktemp("three")
    make_synthetic_classes(root / "train", {"red": 16, "green": 16, "blue": 16}, size=32, seed=1)
    make_synthetic_classes(root / "val", {"red": 6, "green": 6, "blue": 6}, size=32, seed=2)
    return imgclf.train(root / "train", model="seed-cnn", val=str(root / "val"), epochs=3, out=str(root / "run"))


def test_evaluation_of_three_classes(three_class_run, tmp_path):
    evaluation = evaluate_folder(three_class_run, Path(three_class_run.config.train.val))
    write_evaluation(evaluation, tmp_path)
    values = json.loads((tmp_path / "metrics.json").read_text())
    assert values["scored"] == 18
    assert len(values["per_class"]) == 3 and [r["support"] for r in values["per_class"]] == [6, 6, 6]
    assert values["roc"] is None and values["top_5_accuracy"] is None
    assert np.allclose(np.sum(values["confusion_matrix_normalized"], axis=1), 1.0)
    assert sum(map(sum, values["confusion_matrix"])) == 18
    assert len(values["misclassified"]) == 18 - round(values["accuracy"] * 18)
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header == "file,true_label,predicted_label,probability,p_blue,p_green,p_red,error"


def test_top_5_accuracy_for_more_than_5_classes(tmp_path):
    names = [f"c{i}" for i in range(7)]
    rng = np.random.default_rng(0)
    predictions = []
    for i in range(14):
        probabilities = rng.dirichlet(np.ones(7))
        predictions.append(Prediction(f"{i}.png", None, None, None, dict(zip(names, probabilities.tolist()))))
    true = [i % 7 for i in range(14)]
    values = Evaluation("x", names, true, predictions).to_dict()
    probabilities = np.array([[p.probabilities[n] for n in names] for p in predictions])
    ranks = (-probabilities).argsort(axis=1)[:, :5]
    assert values["top_5_accuracy"] == pytest.approx(np.mean([t in row for t, row in zip(true, ranks)]))


def test_a_flat_folder_gets_predictions_only(trained_run, cars_planes, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for photo in sorted((cars_planes / "val_set" / "cars").glob("*.jpg"))[:3]:
        shutil.copy(photo, flat / photo.name)
    evaluation = evaluate_folder(imgclf.load(trained_run.run_dir, engine="torch"), flat)
    values = evaluation.to_dict()
    assert values["labelled"] is False and values["scored"] == 3 and "accuracy" not in values
    assert "Predictions (unlabelled folder)" in build_report(imgclf.load(trained_run.run_dir), evaluation)
