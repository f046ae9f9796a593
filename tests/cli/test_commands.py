"""The commands end to end: what they print and write, and their errors as one line (exit code 1)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import urllib.error
import zlib
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from tests.evaluation.test_runs_index import write_run

import imgclf
from imgclf.cli import main
from imgclf.cli.output import stdout
from imgclf.data.folders import index_folder
from imgclf.demo import shipped_data


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgclf", *args], capture_output=True, text=True, timeout=300)


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = run_cli("train", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: Data folder {tmp_path / 'missing'} does not exist or is not a folder."
    ]


@pytest.mark.parametrize(("rank", "printed"), [("0", "Interrupted; epoch 1 is saved.\n"), ("1", "")])
def test_an_interrupted_training_exits_130_and_only_the_main_process_says_so(
    small_photos, monkeypatch, capsys, rank, printed
):
    def interrupted(**options):
        raise imgclf.TrainingInterrupted("Interrupted; epoch 1 is saved.")

    monkeypatch.setattr("imgclf.training.loop.train", interrupted)
    monkeypatch.setenv("RANK", rank)
    assert main(["train", str(small_photos / "train")]) == 130
    assert capsys.readouterr().err == printed


def test_class_mismatch_names_both_lists(tmp_path, small_photos):
    (small_photos / "val" / "planes").rename(small_photos / "val" / "trucks")
    assert main(["train", str(small_photos / "train"), "--val", str(small_photos / "val")]) == 1


def test_class_mismatch_message(small_photos, capsys):
    (small_photos / "val" / "planes").rename(small_photos / "val" / "trucks")
    main(["train", str(small_photos / "train"), "--val", str(small_photos / "val")])
    err = capsys.readouterr().err
    assert "['cars', 'trucks']" in err and "['cars', 'planes']" in err


def test_an_output_path_that_cannot_be_written_is_one_line(trained_run, cars_planes, tmp_path, capsys):
    photo = str(cars_planes / "val_set" / "cars" / sorted(os.listdir(cars_planes / "val_set" / "cars"))[0])
    arguments = ["predict", str(trained_run.run_dir), photo, "--engine", "torch", "--format", "csv"]
    assert main([*arguments, "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: Cannot use {tmp_path}: Is a directory."
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    (tmp_path / "a-file").write_text("")
    assert main(["train", str(cars_planes / "training_set"), "--out", str(tmp_path / "a-file")]) == 1
    assert "--out must be a folder" in capsys.readouterr().err


def test_resume_refuses_options_that_would_change_what_the_run_learns(trained_run, cars_planes, capsys):
    run_dir = str(trained_run.run_dir)
    assert main(["train", "--resume", run_dir, "--epochs", "9", "--lr", "5", "--batch-size", "30"]) == 1
    error = capsys.readouterr().err
    assert "Received: --lr, --batch-size." in error and "--fine-tune-epochs" in error
    assert main(["train", str(cars_planes / "training_set"), "--resume", run_dir, "--epochs", "9"]) == 1
    assert "Received: DATA." in capsys.readouterr().err
    assert main(["train", "--resume", run_dir, "--epochs", "2"]) == 1  # trained 6 already
    assert "has already trained 6 epochs. Received: --epochs=2." in capsys.readouterr().err
    assert json.loads((trained_run.run_dir / "checkpoint" / "state.json").read_text())["epoch"] == 6


def test_predict_formats_and_output_file(trained_run, cars_planes, tmp_path, capsys):
    folder = cars_planes / "val_set" / "planes"
    assert main(["predict", str(trained_run.run_dir), str(folder), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20
    assert {"file", "label", "index", "probability", "probabilities"} <= set(rows[0])
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(trained_run.run_dir), str(folder), "--format", "csv", "--output", str(output)]) == 0
    lines = output.read_text().splitlines()
    assert lines[0] == "file,label,index,probability,p_cars,p_planes,error"
    assert len(lines) == 21
    assert main(["predict", str(trained_run.run_dir), str(next(folder.glob("*.jpg")))]) == 0
    assert "probability" in capsys.readouterr().out


def test_evaluate_prints_accuracy_and_writes_files(trained_run, cars_planes, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run.run_dir), str(cars_planes / "val_set"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Accuracy:" in printed and "Confusion matrix" in printed
    assert (out / "metrics.json").exists() and (out / "predictions.csv").exists()


def test_summary_of_a_model_name_and_of_a_run(trained_run, capsys):
    assert main(["summary", "seed-cnn"]) == 0
    assert "813,217" in capsys.readouterr().out
    assert main(["summary", str(trained_run.run_dir)]) == 0
    assert "Trainable params: 813,217" in capsys.readouterr().out
    assert main(["summary", "--list"]) == 0
    assert "seed-cnn" in capsys.readouterr().out


@pytest.fixture
def tutorial_layout(small_photos, tmp_path) -> Path:
    """The small photos laid out as the tutorial's folder: training_set/ and val_set/."""
    data = tmp_path / "tutorial"
    data.mkdir()
    (small_photos / "train").rename(data / "training_set")
    (small_photos / "val").rename(data / "val_set")
    return data


def test_demo_on_a_folder_in_the_tutorial_layout(tutorial_layout, tmp_path, capsys):
    data = tutorial_layout
    out = tmp_path / "demo-run"
    assert main(["demo", "--data", str(data), "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Experiment cnn: predictions on photos the model did not train on" in printed
    assert "The tutorial's experiments" in printed
    assert str(out / "summary.txt") in printed
    assert json.loads((out / "config.json").read_text())["train"]["steps_per_epoch"] == 30


def test_demo_photos_ship_inside_the_package():
    data = shipped_data()
    assert index_folder(data / "training_set").class_counts() == [80, 80]
    assert index_folder(data / "val_set").class_counts() == [20, 20]
    assert sum(p.stat().st_size for p in Path(data).rglob("*.jpg")) < 10 * 2**20


def test_demo_runs_both_experiments_side_by_side(tutorial_layout, tmp_path, capsys):
    data = tutorial_layout
    weights = tmp_path / "vgg16.safetensors"
    save_file(torchvision.models.vgg16(weights=None).state_dict(), weights)
    args = ["demo", "--data", str(data), "--experiment", "both", "--epochs", "1", "--out", str(tmp_path / "demo")]
    assert main([*args, "--vgg16-weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert "Experiment vgg16: predictions" in printed
    assert "seed-vgg16" in printed and "seed-cnn" in printed
    summary = (tmp_path / "demo" / "vgg16" / "summary.txt").read_text()
    assert "Non-trainable params: 14,714,688" in summary


def test_vgg16_without_weights_offline_is_one_clear_line(tutorial_layout, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    data = tutorial_layout
    code = main(["train", str(data / "training_set"), "--val", str(data / "val_set"), "--model", "vgg16"])
    assert code == 1
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "--weights FILE" in err
    demo = ["demo", "--data", str(tutorial_layout), "--experiment", "vgg16", "--out", str(tmp_path / "demo")]
    assert main(demo) == 1
    assert "--vgg16-weights FILE" in capsys.readouterr().err
    demo = ["demo", "--data", str(tutorial_layout), "--experiment", "both", "--out", str(tmp_path / "both")]
    assert main([*demo, "--vgg16-weights", str(tmp_path / "missing.pth")]) == 1  # before experiment 1 trains
    assert "Received: --vgg16-weights=" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()


def test_report_calibrates_a_run_that_has_no_calibration(trained_run, cars_planes, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / "calibration.json").unlink()
    (run_dir / "parity-inputs.safetensors").unlink()
    photo = str(sorted((cars_planes / "val_set" / "planes").iterdir())[0])
    assert main(["predict", str(run_dir), photo, "--engine", "torch", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "has no calibration.json" in captured.err
    uncalibrated = json.loads(captured.out)[0]["probability"]

    assert main(["report", str(run_dir), "--engine", "torch"]) == 0
    assert "Fitted temperature" in capsys.readouterr().err
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["temperature"] == pytest.approx(trained_run.temperature, rel=0.02)
    assert (run_dir / "parity-inputs.safetensors").is_file() and (run_dir / "report.html").is_file()
    assert main(["predict", str(run_dir), photo, "--engine", "torch", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "calibration" not in captured.err
    expected = trained_run.predict(photo).probability
    assert json.loads(captured.out)[0]["probability"] == pytest.approx(expected, abs=0.01) != uncalibrated


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_predict_warns_of_an_image_over_40_million_pixels_and_predicts_the_rest(
    trained_run, cars_planes, tmp_path, capsys
):
    huge = tmp_path / "huge.png"  # says 8000×5001 pixels in its header, but holds a few bytes: cut short
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 5001, 8, 2, 0, 0, 0))
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(bytes(100))))
    photo = sorted((cars_planes / "val_set" / "cars").iterdir())[0]
    assert main(["predict", str(trained_run.run_dir), str(huge), str(photo), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "over 40 M pixels" in line]
    assert len(warnings) == 1 and "huge.png (8000×5001)" in warnings[0]
    assert f"{photo},cars," in captured.out


def test_runs_lists_the_runs_of_a_folder_in_each_format(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stdout, "width", 160)  # a terminal wide enough for each cell on one line
    write_run(tmp_path / "runs" / "seed-cnn-late", [(0.4, 0.9, 75.0)], date="2025-02-01 08:00")
    write_run(tmp_path / "runs" / "seed-cnn-early", [(0.5, 0.8, 2.0)], date="2025-01-01 08:00")
    (tmp_path / "runs" / "scratch").mkdir()
    folder = str(tmp_path / "runs")
    assert main(["runs", folder]) == 0
    printed = capsys.readouterr()
    assert printed.out.index("seed-cnn-early") < printed.out.index("seed-cnn-late")
    assert "1 min 15 s" in printed.out and "2025-02-01 08:00" in printed.out
    assert printed.err.strip() == f"Passed over 1 folder in {folder} that are not runs."
    assert main(["runs", folder, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["run"], row["epochs"], row["best_val_accuracy"]) for row in rows] == [
        ("seed-cnn-early", 1, 0.8),
        ("seed-cnn-late", 1, 0.9),
    ]
    assert main(["runs", folder, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run,path,model,data,date,epochs,best_val_accuracy,training_seconds,problem"
    assert lines[1].startswith("seed-cnn-early,") and len(lines) == 3


def test_runs_compare_marks_the_better_value(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs" / "a", [(0.4, 0.9, 30.0)], {"accuracy": 0.9}, lr=0.01)
    write_run(tmp_path / "runs" / "b", [(0.5, 0.8, 10.0)], {"accuracy": 0.8})
    assert main(["runs", "--compare", "a", "runs/b"]) == 0
    table = capsys.readouterr().out
    assert "0.9000 ✓" in table and "10.0 s ✓" in table and "lr" in table
    assert main(["runs", "--compare", "a", "b", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert (rows["lr"]["first"], rows["lr"]["second"], rows["lr"]["better"]) == (0.01, 0.001, None)
    assert rows["accuracy"]["better"] == "a" and rows["training time"]["better"] == "b"
    assert main(["runs", "--compare", "a", "c"]) == 1
    assert "c is not a run directory" in capsys.readouterr().err
