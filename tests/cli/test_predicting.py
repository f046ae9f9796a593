"""`imgclf predict`, `evaluate` and `explain` as a script sees them: exit codes, the CSV written as it goes and
resumed, sorting into folders, and several processes (on this machine, and as two torchrun nodes)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf.cli import main
from imgclf.data.folders import list_images
from imgclf.deploy.predictor import Run


@pytest.fixture
def run_dir(trained_run) -> str:
    return str(trained_run.run_dir)


@pytest.fixture
def empty_photo(tmp_path) -> Path:
    (tmp_path / "zero-byte.jpg").write_bytes(b"")
    return tmp_path / "zero-byte.jpg"


@pytest.fixture
def photos_with_one_bad(cars_planes, tmp_path) -> Path:
    """A labelled folder of 6 real photos and one unreadable file."""
    for class_name in ("cars", "planes"):
        (tmp_path / "photos" / class_name).mkdir(parents=True)
        for photo in sorted((cars_planes / "val_set" / class_name).iterdir())[:3]:
            shutil.copy(photo, tmp_path / "photos" / class_name)
    (tmp_path / "photos" / "cars" / "broken.jpg").write_text("not a photo")
    return tmp_path / "photos"


@pytest.mark.parametrize("output", [[], ["--format", "csv"], ["--format", "json"]])
def test_predict_exits_1_with_one_line_when_no_image_can_be_read(run_dir, empty_photo, capsys, output):
    assert main(["predict", run_dir, str(empty_photo), "--engine", "torch", *output]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == f"error: {empty_photo} could not be read: empty file (0 bytes).\n"


def test_predict_with_some_unreadable_prints_everything_and_the_summary_and_exits_0(
    run_dir, photos_with_one_bad, capsys
):
    assert main(["predict", run_dir, str(photos_with_one_bad), "--engine", "torch", "--format", "csv"]) == 0
    printed = capsys.readouterr()
    assert len(printed.out.splitlines()) == 1 + 7
    assert 'broken.jpg,,,,,,"not an image Pillow can identify' in printed.out
    assert printed.err == "1 of 7 images could not be read (see the error column).\n"

    assert main(["predict", run_dir, str(photos_with_one_bad), "--engine", "torch", "--format", "csv", "--strict"]) == 1
    printed = capsys.readouterr()
    assert len(printed.out.splitlines()) == 1 + 7
    assert printed.err.splitlines() == [
        "1 of 7 images could not be read (see the error column).",
        f"error: 1 of 7 images could not be read, and --strict fails on any; the first, "
        f"{photos_with_one_bad / 'cars' / 'broken.jpg'}, could not be read: not an image Pillow can identify "
        "(corrupt, or another kind of file). Received: --strict. Leave out --strict to accept a few.",
    ]


def test_evaluate_exit_codes(run_dir, photos_with_one_bad, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate = ["evaluate", run_dir, str(photos_with_one_bad), "--engine", "torch", "--out", str(out)]
    assert main(evaluate) == 0
    assert "1 of 7 images could not be read" in capsys.readouterr().err
    assert main([*evaluate, "--strict"]) == 1
    assert "and --strict fails on any" in capsys.readouterr().err
    assert (out / "metrics.json").is_file()  # the results are written all the same

    for photo in photos_with_one_bad.rglob("*.jpg"):
        photo.write_bytes(b"")
    shutil.rmtree(out)
    assert main(evaluate) == 1
    assert capsys.readouterr().err.startswith("error: None of the 7 images could be read; the first, ")
    assert not out.exists()


def test_explain_exit_codes(run_dir, photos_with_one_bad, empty_photo, tmp_path, capsys):
    out = str(tmp_path / "heatmaps")
    assert main(["explain", run_dir, str(empty_photo), "--out", out]) == 1
    assert capsys.readouterr().err == f"error: {empty_photo} could not be read: empty file (0 bytes).\n"
    assert main(["explain", run_dir, str(photos_with_one_bad / "cars"), "--out", out, "--strict"]) == 1
    assert "1 of 4 images could not be read, and --strict" in capsys.readouterr().err
    assert len(list(Path(out).iterdir())) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--resume"], "--resume needs a CSV file to write row by row. Received: --resume with --format table"),
        (["--format", "json", "--output", "p.json", "--nproc", "2"], "--nproc needs a CSV file"),
        (["--link"], "--link only changes how --sort-into copies"),
        (["--sort-into", "sorted", "--output", "p.csv"], "Received: --sort-into with --output. Leave out --output"),
        (["--sort-into", "sorted", "--nproc", "2"], "Received: --sort-into with --nproc."),
    ],
)
def test_options_that_do_not_go_together_are_refused_in_one_line(run_dir, empty_photo, capsys, options, message):
    assert main(["predict", run_dir, str(empty_photo), *options]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_under_torchrun_predict_needs_a_csv_file(run_dir, empty_photo, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["predict", run_dir, str(empty_photo), "--format", "json"]) == 1
    assert capsys.readouterr().err.startswith("error: torchrun needs a CSV file to write row by row.")


def test_an_interrupted_predict_exits_130_and_resume_finishes_the_csv(
    run_dir, cars_planes, tmp_path, monkeypatch, capsys
):
    photos = str(cars_planes / "val_set")
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    arguments = ["predict", run_dir, photos, "--engine", "torch", "--format", "csv", "--batch-size", "8", "--output"]
    assert main([*arguments, str(whole)]) == 0
    predict_iter = Run.predict_iter

    def interrupted(run, files, batch_size=32, tta=False):
        for number, prediction in enumerate(predict_iter(run, files, batch_size, tta)):
            if number == 20:
                raise KeyboardInterrupt
            yield prediction

    monkeypatch.setattr(Run, "predict_iter", interrupted)
    assert main([*arguments, str(resumed)]) == 130
    assert capsys.readouterr().err == (
        f"Interrupted; {resumed} holds the first 16 of its 40 rows. Run the same command with --resume to predict "
        "the rest.\n"
    )
    monkeypatch.undo()
    assert main([*arguments, str(resumed), "--resume"]) == 0
    assert resumed.read_bytes() == whole.read_bytes()


def test_sort_into_prints_the_folders_and_sorting_again_skips(run_dir, photos_with_one_bad, tmp_path, capsys):
    before = {path: path.read_bytes() for path in photos_with_one_bad.rglob("*") if path.is_file()}
    sort = ["predict", run_dir, str(photos_with_one_bad), "--engine", "torch", "--sort-into", str(tmp_path / "out")]
    assert main(sort) == 0
    printed = capsys.readouterr()
    assert "unreadable (not copied)" in printed.out and f"Wrote {tmp_path / 'out' / 'predictions.csv'}" in printed.out
    assert printed.err == f"1 of 7 images could not be read (see {tmp_path / 'out'}/predictions.csv).\n"
    assert sum(1 for path in (tmp_path / "out").rglob("*.jpg")) == 6
    assert main(sort) == 0
    assert "Skipped 7 images sorted before" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in photos_with_one_bad.rglob("*") if path.is_file()} == before


def predict_command(run_dir: str, photos: Path, output: Path) -> list[str]:
    return [run_dir, str(photos), "--engine", "torch", "--format", "csv", "--batch-size", "8", "--output", str(output)]


def one_thread() -> dict[str, str]:
    """The environment of a process computing on one thread, as each of two torchrun processes on 2 cores does:
    then even the last digit of every probability matches."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_processes_write_the_rows_of_one(run_dir, cars_planes, tmp_path):
    photos = cars_planes / "val_set"
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    for output, nproc in ((one, []), (two, ["--nproc", "2"])):
        command = [sys.executable, "-m", "imgclf", "predict", *predict_command(run_dir, photos, output), *nproc]
        result = subprocess.run(command, env=one_thread(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    assert len(two.read_text().splitlines()) == 1 + len(list_images([photos]))
    assert two.read_bytes() == one.read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one.csv", "two.csv"]  # no part left behind


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_write_the_rows_of_one_process(run_dir, cars_planes, tmp_path):
    photos = cars_planes / "val_set"
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    command = [sys.executable, "-m", "imgclf", "predict", *predict_command(run_dir, photos, one)]
    assert subprocess.run(command, env=one_thread(), capture_output=True, timeout=600).returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "predict"]
    predict = ["-m", "imgclf", "predict", *predict_command(run_dir, photos, two)]
    nodes = [
        subprocess.Popen([*torchrun, *rendezvous, *predict], env=one_thread(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [node.communicate(timeout=600)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors
    assert two.read_bytes() == one.read_bytes()
