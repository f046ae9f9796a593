from __future__ import annotations

import json
import pickle
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

import imgclf
from imgclf.cli import main
from imgclf.evaluation.evaluate import evaluate_folder, write_evaluation
from imgclf.files import atomic_write_text, interrupts_held, write_json
from imgclf.runs import RunError, read_config, read_history


class WritesAFileWhenUnpickled:
    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "unpickled!"))


def test_loading_never_unpickles(tmp_path, trained_run):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    marker = tmp_path / "marker.txt"
    payload = WritesAFileWhenUnpickled()
    payload.target = str(marker)
    (run_dir / "model.safetensors").write_bytes(pickle.dumps(payload))
    with pytest.raises(imgclf.RunError, match="not a valid safetensors"):
        imgclf.load(run_dir)
    assert not marker.exists()


def test_a_folder_of_pickled_weights_is_refused_with_a_reason(tmp_path):
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(imgclf.RunError, match="never loads"):
        imgclf.load(tmp_path)


def test_missing_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(imgclf.RunError, match="does not exist"):
        imgclf.load(tmp_path / "nope")


def test_the_saved_config_rebuilds_the_run(trained_run):
    config = read_config(trained_run.run_dir)
    assert config.train.model == "seed-cnn"
    assert config.train.augment == imgclf.AugmentConfig(shear=0.2, zoom=0.2, horizontal_flip=True)
    assert config.class_names == ["cars", "planes"]


def test_predict_real_photos_from_paths_and_pil_images(trained_run, cars_planes):
    run = imgclf.load(trained_run.run_dir)
    plane = next((cars_planes / "val_set" / "planes").glob("*.jpg"))
    by_path = run.predict(plane)
    by_image = run.predict(Image.open(plane))
    assert by_path.label in ("cars", "planes")
    assert by_path.index == run.class_names.index(by_path.label)
    assert sum(by_path.probabilities.values()) == pytest.approx(1.0)
    assert by_path.probability == pytest.approx(max(by_path.probabilities.values()))
    assert by_image.probabilities["planes"] == pytest.approx(by_path.probabilities["planes"], abs=1e-5)


def test_predict_a_list_keeps_going_past_a_broken_file(trained_run, cars_planes, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    photos = sorted((cars_planes / "val_set" / "cars").glob("*.jpg"))[:2]
    predictions = trained_run.predict([photos[0], broken, photos[1]])
    assert [p.error is None for p in predictions] == [True, False, True]
    assert "empty" in predictions[1].error
    with pytest.raises(imgclf.ImageError, match="broken.jpg"):
        trained_run.predict(broken)


def test_evaluate_on_the_real_validation_photos(trained_run, cars_planes, tmp_path):
    evaluation = evaluate_folder(trained_run, cars_planes / "val_set")
    assert len(evaluation.predictions) == 40
    assert evaluation.confusion.sum() == 40
    assert evaluation.accuracy == pytest.approx(evaluation.confusion.trace() / 40)
    # Six short epochs already separate cars from planes well above chance (0.5).
    assert evaluation.accuracy >= 0.7
    write_evaluation(evaluation, tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == evaluation.accuracy
    lines = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "file,true_label,predicted_label,probability,p_cars,p_planes,error"
    assert len(lines) == 41
    assert all(Path(line.split(",")[0]).exists() for line in lines[1:])


def test_evaluate_refuses_unknown_classes(trained_run, tmp_path):
    (tmp_path / "trucks").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "trucks" / "t.png")
    with pytest.raises(imgclf.DatasetError, match="trucks"):
        evaluate_folder(trained_run, tmp_path)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    atomic_write_text(target, "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    atomic_write_text(tmp_path / "written.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "written.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_ctrl_c_inside_interrupts_held_comes_after_the_block():
    finished = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        signal.raise_signal(signal.SIGINT)
        finished.append("block")
    assert finished == ["block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_json_files_hold_null_for_nan_so_any_reader_can_read_them(tmp_path):
    values = {"accuracy": float("nan"), "rows": [{"loss": float("inf")}, 0.5], "name": "x"}
    write_json(tmp_path / "metrics.json", values)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"accuracy": None, "rows": [{"loss": None}, 0.5], "name": "x"}


def tampered_run(trained_run, tmp_path: Path, file: str, key: str, value: object) -> Path:
    """A copy of the trained run whose `file` holds `value` at the dotted `key`."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    values = json.loads((run_dir / file).read_text())
    *parents, leaf = key.split(".")
    target = values
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    (run_dir / file).write_text(json.dumps(values))  # as Python's json writes it: inf is Infinity
    return run_dir


@pytest.mark.parametrize(
    ("file", "key", "value", "named"),
    [
        ("config.json", "preprocessing.image_size", float("inf"), "preprocessing.image_size=inf"),
        ("config.json", "preprocessing.image_size", 0, "preprocessing.image_size=0"),
        ("config.json", "preprocessing.image_size", 100000, "preprocessing.image_size=100000"),
        ("config.json", "preprocessing.mean", [0.5, 0.5], "preprocessing.mean=[0.5, 0.5]"),
        ("config.json", "preprocessing.mean", "0.5", "preprocessing.mean='0.5'"),
        ("config.json", "preprocessing.std", [0.0, 1.0, 1.0], "preprocessing.std=[0.0, 1.0, 1.0]"),
        ("config.json", "preprocessing.interpolation", "lanczos", "preprocessing.interpolation='lanczos'"),
        ("config.json", "preprocessing.resize", "stretch", "preprocessing.resize='stretch'"),
        ("config.json", "preprocessing.pad_color", [0, 0, 300], "preprocessing.pad_color=[0, 0, 300]"),
        ("config.json", "preprocessing.pad_color", "black", "preprocessing.pad_color='black'"),
        ("config.json", "train.resize", "stretch", "--resize='stretch'"),
        ("config.json", "train.pad_color", [0, 0], "--pad-color=[0, 0]"),
        ("config.json", "train.min_confidence", "0.8", "--min-confidence='0.8'"),
        ("config.json", "train.min_confidence", 5, "--min-confidence=5"),
        ("config.json", "train.lr", float("inf"), "--lr=inf"),
        ("config.json", "class_names", ["cars", "cars"], "class_names=['cars', 'cars']"),
        ("calibration.json", "temperature", float("inf"), "temperature=inf"),
        ("calibration.json", "temperature", 1e-320, "temperature=1e-320"),
        ("calibration.json", "temperature", True, "temperature=True"),
        ("calibration.json", "temperature", "1.5", "temperature='1.5'"),
    ],
)
def test_a_tampered_run_file_is_one_line_naming_the_file_the_key_and_the_value(
    trained_run, tmp_path, file, key, value, named
):
    run_dir = tampered_run(trained_run, tmp_path, file, key, value)
    with pytest.raises(imgclf.RunError) as error:
        imgclf.load(run_dir)
    message = str(error.value)
    assert str(run_dir / file) in message and f"Received: {named}." in message
    assert "\n" not in message


def test_a_run_saved_before_resize_existed_loads_as_squash(trained_run, tmp_path, cars_planes):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    values = json.loads((run_dir / "config.json").read_text())
    for section in ("preprocessing", "train"):
        del values[section]["resize"], values[section]["pad_color"]
    (run_dir / "config.json").write_text(json.dumps(values))
    old = imgclf.load(run_dir)
    assert old.preprocessing == trained_run.preprocessing
    assert (old.preprocessing.resize, old.preprocessing.pad_color) == ("squash", (0, 0, 0))
    photo = next((cars_planes / "val_set" / "planes").glob("*.jpg"))
    assert old.predict(photo).probabilities == trained_run.predict(photo).probabilities


@pytest.mark.parametrize("file", ["config.json", "calibration.json"])
def test_json_nested_too_deeply_is_a_run_error_not_a_recursion_error(trained_run, tmp_path, file):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / file).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(imgclf.RunError, match="nested too deeply"):
        imgclf.load(run_dir)


def test_the_cli_says_a_tampered_config_in_one_line_and_exits_with_1(trained_run, tmp_path, cars_planes, capsys):
    run_dir = tampered_run(trained_run, tmp_path, "config.json", "preprocessing.image_size", 100000)
    photo = next((cars_planes / "val_set" / "cars").glob("*.jpg"))
    assert main(["predict", str(run_dir), str(photo)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run_dir / 'config.json'} holds a value imgclf cannot use. Invalid preprocessing.image_size. "
        "Received: preprocessing.image_size=100000. Use a whole number of pixels from 16 to 4096."
    ]


def test_history_is_read_as_numbers_and_a_damaged_one_is_named(tmp_path):
    assert read_history(tmp_path) == []
    (tmp_path / "history.csv").write_text("epoch,loss,val_accuracy\n1,0.5,0.75\n2,0.25,1\n")
    assert read_history(tmp_path) == [
        {"epoch": 1, "loss": 0.5, "val_accuracy": 0.75},
        {"epoch": 2, "loss": 0.25, "val_accuracy": 1.0},
    ]
    (tmp_path / "history.csv").write_text("epoch,loss\n1,x\n")
    with pytest.raises(RunError, match=r"history.csv is damaged .*Train the run again"):
        read_history(tmp_path)
