"""Listing and comparing runs from their files: dates, epochs, best accuracy, time, damaged runs, the better side."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from imgclf.config import AugmentConfig, Preprocessing, RunConfig, TrainConfig
from imgclf.evaluation.runs_index import RunsError, compare_runs, find_run, list_runs, read_summary


def write_run(
    folder: Path,
    history: list[tuple[float, float, float]],
    metrics: dict | None = None,
    date: str = "2025-01-01 12:00",
    **options,
) -> Path:
    """A run directory as training leaves it: config.json, history.csv with one (val_loss, val_accuracy, seconds)
    row per epoch, and metrics.json when `metrics` is given; its last epoch ended at `date`."""
    folder.mkdir(parents=True)
    config = RunConfig(
        train=TrainConfig(data="photos/train", model="seed-cnn", **options),
        class_names=["cars", "planes"],
        preprocessing=Preprocessing(),
        dataset={"train_count": 16, "val_count": 6},
    )
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    rows = [
        f"{epoch},0.5,0.5,{loss},{accuracy},{seconds}" for epoch, (loss, accuracy, seconds) in enumerate(history, 1)
    ]
    (folder / "history.csv").write_text("\n".join(["epoch,loss,accuracy,val_loss,val_accuracy,seconds", *rows]) + "\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    when = datetime.strptime(date, "%Y-%m-%d %H:%M").timestamp()
    os.utime(folder / "history.csv", (when, when))
    return folder


def scores(accuracy: float, macro_f1: float, log_loss: float, ece: float) -> dict:
    """The part of metrics.json that runs are compared on."""
    return {"accuracy": accuracy, "macro_f1": macro_f1, "log_loss": log_loss, "calibration": {"ece": ece}}


def test_runs_are_listed_by_the_date_of_their_last_epoch(tmp_path):
    write_run(tmp_path / "a-later", [(0.7, 0.6, 2.5), (0.6, 0.7, 3.0)], date="2025-03-01 09:30")
    write_run(tmp_path / "b-earlier", [(0.5, 0.8, 1.0)], scores(0.9, 0.9, 0.3, 0.05), date="2025-01-01 12:00")
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "readme.txt").write_text("not a folder")
    listing = list_runs(tmp_path)
    assert [run.name for run in listing.runs] == ["b-earlier", "a-later"]
    assert listing.passed_over == 1
    earlier, later = listing.runs
    assert (earlier.model, earlier.data, earlier.epochs, earlier.seconds) == ("seed-cnn", "photos/train", 1, 1.0)
    assert earlier.date == datetime(2025, 1, 1, 12, 0)
    assert earlier.best_val_accuracy == 0.9  # the kept weights', from metrics.json
    assert (later.epochs, later.seconds, later.best_val_accuracy) == (2, 5.5, 0.7)
    assert earlier.problem is None and later.problem is None


def test_without_metrics_the_best_accuracy_is_the_lowest_val_loss_epochs(tmp_path):
    run = write_run(tmp_path / "run", [(0.6, 0.9, 1.0), (0.4, 0.8, 1.0), (0.5, 0.85, 1.0)])
    assert read_summary(run).best_val_accuracy == 0.8


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda run: (run / "config.json").write_text('{"train": '), "config.json is damaged (Expecting value"),
        (lambda run: (run / "config.json").unlink(), "config.json is missing"),
        (lambda run: (run / "history.csv").write_text("epoch,val_loss\n1,x\n"), "history.csv is damaged"),
        (lambda run: (run / "metrics.json").write_text("[1, 2]"), "metrics.json is damaged"),
        (lambda run: (run / "metrics.json").write_text('{"accuracy": "high"}'), "metrics.json is damaged"),
    ],
)
def test_a_damaged_run_is_listed_with_its_problem(tmp_path, damage, problem):
    damage(write_run(tmp_path / "damaged", [(0.5, 0.8, 1.0)], scores(0.9, 0.9, 0.3, 0.05)))
    write_run(tmp_path / "fine", [(0.5, 0.8, 1.0)])
    runs = {run.name: run for run in list_runs(tmp_path).runs}
    assert sorted(runs) == ["damaged", "fine"]
    assert runs["damaged"].problem.startswith(problem)
    assert runs["fine"].problem is None


def test_a_missing_folder_is_one_error(tmp_path):
    with pytest.raises(RunsError, match="Received: DIR="):
        list_runs(tmp_path / "no-such-folder")


def test_compare_shows_the_options_that_differ_and_marks_the_better_values(tmp_path):
    augment = AugmentConfig(zoom=0.2)
    first = write_run(tmp_path / "a", [(0.4, 0.9, 30.0)], scores(0.9, 0.88, 0.45, 0.02), lr=0.01, augment=augment)
    second = write_run(tmp_path / "b", [(0.5, 0.8, 10.0), (0.4, 0.85, 10.0)], scores(0.85, 0.88, 0.3, 0.05))
    rows = {(row.section, row.name): row for row in compare_runs(read_summary(first), read_summary(second))}
    assert [name for section, name in rows if section == "options"] == ["lr", "augment.zoom"]
    assert (rows["options", "lr"].first, rows["options", "lr"].second) == (0.01, 0.001)
    assert (rows["options", "augment.zoom"].first, rows["options", "augment.zoom"].second) == (0.2, 0.0)
    assert rows["data", "training images"].first == rows["data", "training images"].second == 16
    better = {name: row.better for (section, name), row in rows.items() if section == "results"}
    assert better == {
        "accuracy": 0,
        "macro F1": None,  # a tie
        "log loss": 1,
        "ECE": 0,
        "epochs": None,  # more or fewer epochs is not better
        "training time": 1,
    }


def test_a_run_to_compare_is_a_path_or_a_name_in_the_folder(tmp_path, monkeypatch):
    run = write_run(tmp_path / "runs" / "seed-cnn-1", [(0.5, 0.8, 1.0)])
    monkeypatch.chdir(tmp_path)
    assert find_run("seed-cnn-1") == Path("runs") / "seed-cnn-1"
    assert find_run(run, "elsewhere") == run
    with pytest.raises(RunsError, match="seed-cnn-2 is not a run directory, nor the name of one in runs"):
        find_run("seed-cnn-2")
