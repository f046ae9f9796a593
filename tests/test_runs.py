from __future__ import annotations

import json
import pickle
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

import imgclf
from imgclf.evaluation.evaluate import evaluate_folder, write_evaluation
from imgclf.files import atomic_write_text, interrupts_held, write_json
from imgclf.runs import read_config


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
