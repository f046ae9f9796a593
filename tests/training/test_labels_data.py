"""Training on a labels CSV: the same run as from class folders, with what the CSV was saved in config.json."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

import imgclf
from imgclf.config import ConfigError, ImgclfError
from imgclf.training.options import make_train_config

QUICK = {"model": "seed-cnn", "epochs": 2, "seed": 0}


def test_a_run_trains_on_a_csv_and_saves_what_the_csv_was(flat_photos, tmp_path):
    run = imgclf.train(labels=flat_photos / "labels.csv", images=flat_photos, out=str(tmp_path / "run"), **QUICK)

    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["class_names"] == ["cars", "planes"]
    assert config["train"]["labels"] == str(flat_photos / "labels.csv") and config["train"]["data"] == str(flat_photos)
    assert config["dataset"]["train_count"] == 16 and config["dataset"]["val_count"] == 6
    assert config["dataset"]["labels_rows"] == 22 and len(config["dataset"]["labels_sha256"]) == 64
    assert run.predict(next(flat_photos.glob("plane_*.jpg"))).label in ("cars", "planes")
    assert (run.run_dir / "report.html").is_file()


def test_an_unreadable_photo_of_the_csv_is_skipped_and_listed(flat_photos, tmp_path):
    broken = sorted(flat_photos.glob("car_*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")

    run = imgclf.train(labels=flat_photos / "labels.csv", out=str(tmp_path / "run"), **QUICK)

    with (run.run_dir / "skipped.csv").open(newline="") as file:
        assert [row["file"] for row in csv.DictReader(file)] == [str(broken)]


def test_resuming_after_the_csv_changed_warns(flat_photos, tmp_path, caplog):
    run = imgclf.train(labels=flat_photos / "labels.csv", out=str(tmp_path / "run"), **{**QUICK, "epochs": 1})
    with (flat_photos / "labels.csv").open("a") as file:
        file.write("\n")

    with caplog.at_level(logging.WARNING):
        imgclf.train(resume=run.run_dir, epochs=2, progress=False)

    assert "has changed since the run started (22 rows then, 22 now)" in caplog.text


def test_the_images_folder_defaults_to_the_csvs_own(flat_photos):
    config = make_train_config(None, labels=str(flat_photos / "labels.csv"))

    assert config.data == str(flat_photos)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"images": "photos"}, ImgclfError, r"--images names the folder of a labels CSV. Received: --images=photos"),
        ({"labels": "l.csv", "val": "v"}, ConfigError, r"Invalid option --val. Received: --val='v'. With --labels"),
    ],
)
def test_csv_options_that_do_not_go_together_are_one_line(options, error, message):
    with pytest.raises(error, match=message):
        make_train_config("data" if "labels" in options else None, **options)


def test_a_multi_label_run_tunes_thresholds_scores_and_predicts_label_sets(multi_label_run):
    run, photos = multi_label_run, Path(multi_label_run.config.train.data)

    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["train"]["multi_label"] and config["class_names"] == ["cars", "planes", "wide"]
    thresholds = json.loads((run.run_dir / "thresholds.json").read_text())
    assert sorted(thresholds) == ["cars", "planes", "wide"] and all(0 <= t <= 1 for t in thresholds.values())
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["images"] == 6 and 0 < metrics["mean_average_precision"] <= 1
    assert {"subset_accuracy", "hamming_loss", "micro_f1", "macro_f1"} <= set(metrics)
    assert [row["threshold"] for row in metrics["per_class"]] == [thresholds[c] for c in ("cars", "planes", "wide")]
    with (run.run_dir / "predictions.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and {"wide" in row["true_labels"] for row in rows} == {True, False}
    prediction = run.predict(next(photos.glob("plane_*.jpg")))
    expected = sorted(
        (c for c in thresholds if prediction.probabilities[c] >= thresholds[c]),
        key=lambda c: -prediction.probabilities[c],
    )
    assert prediction.labels == expected  # the labels at or above their thresholds, most probable first
    assert prediction.label == ";".join(prediction.labels) and prediction.index is None
    assert sum(prediction.probabilities.values()) != pytest.approx(1.0)  # a sigmoid per label, not a softmax
    report = (run.run_dir / "report.html").read_text()
    assert "mean average precision" in report and "Mistakes per label" in report


def test_two_labels_train_a_sigmoid_each_so_that_both_can_be_predicted(flat_photos, tmp_path):
    photo = next(flat_photos.glob("plane_*.jpg"))
    run = imgclf.train(labels=flat_photos / "labels.csv", multi_label=True, out=str(tmp_path / "run"), **QUICK)

    size = run.preprocessing.image_size
    assert run.model(torch.zeros(1, 3, size, size)).shape == (1, 2)  # not the one logit of a two-class run
    loaded = imgclf.load(run.run_dir)
    thresholds = json.loads((run.run_dir / "thresholds.json").read_text())
    assert sorted(thresholds) == ["cars", "planes"] and loaded.thresholds == [thresholds["cars"], thresholds["planes"]]
    probabilities = loaded.predict(photo).probabilities
    assert sum(probabilities.values()) != pytest.approx(1.0)  # each label its own sigmoid
    loaded.thresholds = [min(probabilities.values())] * 2
    assert sorted(loaded.predict(photo).labels) == ["cars", "planes"]
