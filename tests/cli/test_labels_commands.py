"""`imgclf train --labels` and `imgclf evaluate --labels`: a CSV's rows in place of class folders."""

from __future__ import annotations

import csv

from tests.conftest import label_wide_photos

from imgclf.cli import main


def test_train_and_evaluate_on_a_csv(flat_photos, tmp_path, capsys):
    labels, run_dir = str(flat_photos / "labels.csv"), tmp_path / "run"
    train = ["train", "--labels", labels, "--images", str(flat_photos), "--model", "seed-cnn", "--epochs", "1"]

    assert main([*train, "--out", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir), "--labels", labels, "--split", "val"]) == 0

    with (run_dir / "eval-labels-val" / "predictions.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and {row["true_label"] for row in rows} == {"cars", "planes"}


def test_evaluate_takes_dir_or_labels_not_both_and_says_so_before_loading_the_run(flat_photos, tmp_path, capsys):
    arguments = ["evaluate", str(tmp_path / "no-run"), str(flat_photos), "--labels", str(flat_photos / "labels.csv")]

    assert main(arguments) == 1
    assert capsys.readouterr().err.strip().startswith("error: Give DIR or --labels, not both. Received: DIR=")
    assert main(["evaluate", str(tmp_path / "no-run"), "--split", "val"]) == 1
    assert "--split goes with --labels CSV" in capsys.readouterr().err


def test_train_without_data_nor_labels_names_both(capsys):
    assert main(["train", "--model", "seed-cnn"]) == 1
    assert "give a folder with one sub-folder per class, --labels CSV, or --resume RUN" in capsys.readouterr().err


def test_evaluate_a_multi_label_run_on_a_csvs_rows(flat_photos, tmp_path, capsys):
    multi, run_dir = str(label_wide_photos(flat_photos)), tmp_path / "run"
    assert main(["train", "--labels", multi, "--model", "seed-cnn", "--epochs", "1", "--out", str(run_dir)]) == 0
    capsys.readouterr()

    assert main(["evaluate", str(run_dir), "--labels", multi, "--split", "val"]) == 0

    assert "mAP: " in capsys.readouterr().out
    with (run_dir / "eval-multi-val" / "predictions.csv").open(newline="") as file:
        assert len(list(csv.DictReader(file))) == 6
    assert "Mistakes per label" in (run_dir / "eval-multi-val" / "report.html").read_text()
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report.html")]) == 0
    assert "mAP: " in capsys.readouterr().out and "average precision" in (tmp_path / "report.html").read_text()
    assert main(["evaluate", str(run_dir), str(flat_photos)]) == 1
    assert "is a multi-label run, which evaluating a folder does not handle yet" in capsys.readouterr().err
