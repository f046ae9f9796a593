from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.cli import main
from imgclf.deploy.predictor import Prediction
from imgclf.evaluation.evaluate import Evaluation, evaluate_folder, write_evaluation
from imgclf.evaluation.report import build_report

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory) -> imgclf.Run:
    """seed-cnn on 3 colour classes, long enough to be mostly right."""
    root = tmp_path_factory.mktemp("three")
    make_synthetic_classes(root / "train", {"red": 16, "green": 16, "blue": 16}, size=32, seed=1)
    make_synthetic_classes(root / "val", {"red": 6, "green": 6, "blue": 6}, size=32, seed=2)
    return imgclf.train(root / "train", model="seed-cnn", val=str(root / "val"), epochs=3, out=str(root / "run"))


def test_training_writes_calibration_metrics_and_report(trained_run):
    run_dir = trained_run.run_dir
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["images"] == 40
    assert calibration["val_log_loss_after"] <= calibration["val_log_loss_before"] + 1e-9
    assert trained_run.temperature == pytest.approx(calibration["temperature"])
    values = json.loads((run_dir / "metrics.json").read_text())
    assert values["scored"] == 40 and 0 <= values["accuracy"] <= 1
    assert (run_dir / "report.html").stat().st_size > 10_000


def test_the_temperature_changes_probabilities_not_labels(trained_run, cars_planes, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    photos = sorted((cars_planes / "val_set").rglob("*.jpg"))[:8]
    calibrated = imgclf.load(run_dir, engine="torch").predict(photos)
    (run_dir / "calibration.json").unlink()
    raw = imgclf.load(run_dir, engine="torch").predict(photos)
    assert [p.label for p in calibrated] == [p.label for p in raw]
    assert any(abs(a.probability - b.probability) > 1e-3 for a, b in zip(calibrated, raw))


def test_min_confidence_labels_unsure(trained_run, cars_planes):
    run = imgclf.load(trained_run.run_dir, engine="torch")
    photos = sorted((cars_planes / "val_set").rglob("*.jpg"))
    confidences = [p.probability for p in run.predict(photos)]
    threshold = float(np.median(confidences))
    run.min_confidence = threshold
    predictions = run.predict(photos)
    unsure = [p for p in predictions if p.label == "unsure"]
    assert len(unsure) == sum(c < threshold for c in confidences) > 0
    assert all(p.index is None and p.probability < threshold for p in unsure)
    assert all(p.probability >= threshold and p.label in run.class_names for p in predictions if p not in unsure)


def test_min_confidence_saved_with_the_run_and_checked(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train",
        model="seed-cnn",
        val=str(small_photos / "val"),
        epochs=1,
        min_confidence=0.99,
        out=str(tmp_path / "run"),
    )
    assert imgclf.load(run.run_dir).min_confidence == 0.99
    assert all(p.label == "unsure" for p in run.predict(sorted((small_photos / "val").rglob("*.jpg"))))
    with pytest.raises(imgclf.ImgclfError, match="--min-confidence"):
        imgclf.train(small_photos / "train", model="seed-cnn", min_confidence=1.5, out=str(tmp_path / "bad"))


def test_tta_averages_the_flipped_image(trained_run, cars_planes):
    run = imgclf.load(trained_run.run_dir, engine="torch")
    photo = next((cars_planes / "val_set" / "planes").glob("*.jpg"))
    flipped = Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    expected = (run.predict(photo).probabilities["planes"] + run.predict(flipped).probabilities["planes"]) / 2
    assert run.predict(photo, tta=True).probabilities["planes"] == pytest.approx(expected, abs=1e-4)


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


def test_report_embeds_every_image_and_links_nothing_outside(trained_run):
    page = (trained_run.run_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) > 10 and all(s.startswith("data:image/") for s in sources)
    without_data = re.sub(r'"data:[^"]*"', '""', page)
    assert "http" not in without_data and "//" not in without_data and "url(" not in without_data
    assert "<link" not in page and "<script" not in page
    sections = ("Configuration", "Dataset", "Training curves", "Metrics", "Confusion matrix", "ROC and calibration")
    assert all(section in page for section in (*sections, "Grad-CAM"))


def test_each_confusion_cell_opens_its_images(trained_run):
    page = (trained_run.run_dir / "report.html").read_text()
    values = json.loads((trained_run.run_dir / "metrics.json").read_text())
    for i, row in enumerate(values["confusion_matrix"]):
        for j, count in enumerate(row):
            assert f'href="#cell-{i}-{j}">{count}<' in page
            panel = re.search(rf'<section class="cell" id="cell-{i}-{j}">(.*?)</section>', page).group(1)
            assert panel.count("<figure") == count
    wrong = values["misclassified"]
    if wrong:
        assert Path(wrong[0]["file"]).name in page


def test_evaluate_and_report_commands(trained_run, cars_planes, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / "report.html").unlink()
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                str(cars_planes / "val_set"),
                "--out",
                str(out),
                "--engine",
                "torch",
                "--tta",
                "--min-confidence",
                "0.9",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "macro F1" in printed and "AUC" in printed and "Per class" in printed
    values = json.loads((out / "metrics.json").read_text())
    assert values["tta"] is True and values["min_confidence"] == 0.9 and (out / "report.html").is_file()
    assert main(["report", str(run_dir), "--engine", "torch"]) == 0
    assert (run_dir / "report.html").is_file()
    assert main(["predict", str(run_dir), str(cars_planes / "val_set"), "--min-confidence", "2"]) == 1


def test_the_render_script_sees_a_report_that_is_not_blank(trained_run, tmp_path):
    png = tmp_path / "report.png"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "render_report.py"),
            str(trained_run.run_dir / "report.html"),
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    image = Image.open(png)
    assert image.width >= 1000 and image.height > 2000  # the whole page, not one screen


def test_the_render_script_fails_on_a_blank_page(tmp_path):
    page = tmp_path / "blank.html"
    page.write_text("<html><body></body></html>")
    script = [sys.executable, str(REPO / "scripts" / "render_report.py"), str(page), str(tmp_path / "b.png")]
    result = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "blank" in result.stderr
