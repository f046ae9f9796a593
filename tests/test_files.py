from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from imgclf.cli.output import PredictionStream
from imgclf.deploy.predictor import Prediction
from imgclf.files import cache_dir, write_csv

FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1"]


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def read_csv_file(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:  # keep a carriage return inside a cell as it is
        return read_csv(file.read())


@pytest.mark.parametrize("formula", FORMULAS)
def test_write_csv_makes_a_cell_that_starts_a_formula_inert(tmp_path, formula):
    write_csv(tmp_path / "skipped.csv", ("file", formula), [(formula, "unreadable")])
    rows = read_csv_file(tmp_path / "skipped.csv")
    assert rows == [["file", "'" + formula], ["'" + formula, "unreadable"]]


def test_a_carriage_return_inside_a_cell_does_not_end_the_row(tmp_path):
    write_csv(tmp_path / "skipped.csv", ("file", "reason"), [("car\r=1+1.jpg", "unreadable"), ("plane.jpg", "empty")])
    rows = read_csv_file(tmp_path / "skipped.csv")
    assert rows == [["file", "reason"], ["car\r=1+1.jpg", "unreadable"], ["plane.jpg", "empty"]]


def test_write_csv_leaves_numbers_and_plain_text_as_they_are(tmp_path):
    row = [-0.5, -3, 0.25, "-0.500000", "+1e-05", "cars", "photos/=not-at-the-start.jpg", ""]
    write_csv(tmp_path / "history.csv", [f"c{i}" for i in range(len(row))], [row])
    assert read_csv_file(tmp_path / "history.csv")[1] == [
        "-0.5",
        "-3",
        "0.25",
        "-0.500000",
        "+1e-05",
        "cars",
        "photos/=not-at-the-start.jpg",
        "",
    ]


def format_predictions(predictions: list[Prediction], class_names: list[str], fmt: str) -> str:
    """What `imgclf predict --format FMT` prints for `predictions`."""
    printed: list[str] = []
    stream = PredictionStream(printed.append, fmt, class_names)
    stream(predictions)
    stream.close()
    return "".join(printed)


def prediction(file: str, label: str, probability: float) -> Prediction:
    return Prediction(file, label, 0, probability, {label: probability, "planes": 1 - probability})


def test_predict_format_csv_makes_class_and_file_names_inert():
    text = format_predictions([prediction("=cmd.jpg", "@cars", 0.75)], ["@cars", "planes"], "csv")
    assert read_csv(text) == [
        ["file", "label", "index", "probability", "p_@cars", "p_planes", "error"],
        ["'=cmd.jpg", "'@cars", "0", "0.750000", "0.750000", "0.250000", ""],
    ]


def test_predict_format_json_never_prints_nan():
    text = format_predictions([prediction("car.jpg", "cars", math.nan)], ["cars", "planes"], "json")
    assert "NaN" not in text
    [printed] = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert printed["probability"] is None and printed["probabilities"] == {"cars": None, "planes": None}


@pytest.mark.parametrize(("setting", "under_home"), [("~", "."), ("~/caches/imgclf", "caches/imgclf")])
def test_a_cache_folder_under_tilde_is_under_the_home_folder(tmp_path, monkeypatch, setting, under_home):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("IMGCLF_CACHE", setting)
    assert cache_dir("onnx") == Path(tmp_path, under_home, "onnx")
