from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.cli import main
from imgclf.config import ConfigError
from imgclf.data.images import load_tensor
from imgclf.deploy import export
from imgclf.deploy.engines import OnnxRuntimeEngine, installed_engines, pick_engine
from imgclf.serve import create_app


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, trained_run) -> Path:
    """A copy of the trained seed-cnn run with `imgclf export` done inside it."""
    run_dir = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    export.export_onnx(imgclf.load(run_dir))
    return run_dir


def val_photos(cars_planes: Path) -> list[Path]:
    return sorted((cars_planes / "val_set").rglob("*.jpg"))


def test_export_writes_onnx_with_classes_and_preprocessing_inside(exported_run):
    model = onnx.load(exported_run / "model.onnx")
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(metadata["imgclf.class_names"]) == ["cars", "planes"]
    assert json.loads(metadata["imgclf.preprocessing"])["image_size"] == 64
    assert metadata["imgclf.weights_sha256"] == export.weights_digest(exported_run)
    report = json.loads((exported_run / "export.json").read_text())
    assert report["parity"]["passed"] is True
    assert report["parity"]["images"] == export.PARITY_INPUTS  # the validation photos the run keeps
    assert report["parity"]["max_difference"] < 1e-4


def test_the_onnx_file_alone_answers_as_the_run(exported_run, cars_planes):
    """A user with only model.onnx and its metadata gets the run's probabilities."""
    session = onnxruntime.InferenceSession(str(exported_run / "model.onnx"), providers=["CPUExecutionProvider"])
    run = imgclf.load(exported_run, engine="torch")
    photos = val_photos(cars_planes)[:6]
    pixels = np.stack([load_tensor(p, run.preprocessing).numpy() for p in photos]).astype(np.float32) / 255
    onnx_probabilities = session.run(None, {"pixels": pixels})[0]
    torch_probabilities = [run.predict(p).probabilities for p in photos]
    expected = np.array([[row["cars"], row["planes"]] for row in torch_probabilities])
    np.testing.assert_allclose(onnx_probabilities, expected, atol=1e-5)


def test_export_fails_and_writes_nothing_but_the_report_when_onnx_disagrees(tmp_path, trained_run, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)

    def swapped(self, images):
        probabilities = original(self, images)
        probabilities[0] = probabilities[0, ::-1]
        return probabilities

    original = OnnxRuntimeEngine.__call__
    monkeypatch.setattr(OnnxRuntimeEngine, "__call__", swapped)
    with pytest.raises(export.ExportError, match="1 top-1 differences"):
        export.export_onnx(imgclf.load(run_dir))
    assert not (run_dir / "model.onnx").exists()
    assert json.loads((run_dir / "export.json").read_text())["parity"]["passed"] is False


def moved_away_from_its_photos(run_dir: Path, tmp_path: Path) -> Path:
    """`run_dir` copied as if to another machine, where its training and validation folders do not exist."""
    moved = tmp_path / "elsewhere" / run_dir.name
    shutil.copytree(run_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["train"]["data"] = str(tmp_path / "photos" / "train")
    config["train"]["val"] = str(tmp_path / "photos" / "val")
    (moved / "config.json").write_text(json.dumps(config))
    return moved


def test_a_run_without_its_photos_exports_and_runs_on_every_engine(tmp_path, trained_run, cars_planes, caplog):
    run_dir = moved_away_from_its_photos(trained_run.run_dir, tmp_path)
    photos = val_photos(cars_planes)[::5]
    expected = trained_run.predict(photos)
    for engine in ("openvino", "onnx", "auto"):
        run = imgclf.load(run_dir, engine=engine)
        assert run.engine.name == ("openvino" if engine == "auto" else engine)
        assert [p.label for p in run.predict(photos)] == [p.label for p in expected]
    with TestClient(create_app(imgclf.load(run_dir, engine="auto"))) as client:
        response = client.post("/predict", files={"file": ("photo.jpg", photos[0].read_bytes(), "image/jpeg")})
    assert response.status_code == 200 and response.json()["label"] == expected[0].label
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    result = export.export_onnx(imgclf.load(run_dir))
    assert result.parity.passed and result.parity.images == export.PARITY_INPUTS
    assert main(["predict", str(run_dir), str(photos[0]), "--engine", "onnx", "--format", "json"]) == 0


def test_a_run_trained_before_parity_inputs_reads_its_validation_images(tmp_path, trained_run, cars_planes):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / export.PARITY_INPUTS_FILE).unlink()
    assert export.export_onnx(imgclf.load(run_dir), tmp_path / "onnx").parity.images == 40  # every one
    run_dir = moved_away_from_its_photos(run_dir, tmp_path)
    with pytest.raises(export.ExportError, match="--parity-images"):
        export.export_onnx(imgclf.load(run_dir))
    result = export.export_onnx(imgclf.load(run_dir), images=[cars_planes / "val_set" / "cars"])
    assert result.parity.images == 20 and result.parity.passed


@pytest.mark.parametrize("engine", [name for name in installed_engines() if name != "torch"])
def test_exported_engines_agree_with_torch_on_real_photos(exported_run, cars_planes, engine):
    photos = val_photos(cars_planes)
    expected = imgclf.load(exported_run, engine="torch").predict(photos)
    run = imgclf.load(exported_run, engine=engine)
    got = run.predict(photos)
    assert [p.label for p in got] == [p.label for p in expected]
    # OpenVINO computes in bf16 on CPUs that have it (3 significant digits), else in fp32 as PyTorch does.
    tolerance = 1e-4 if run.engine.precision == "fp32" else 2e-2
    for mine, theirs in zip(got, expected):
        assert mine.probabilities["planes"] == pytest.approx(theirs.probabilities["planes"], abs=tolerance)


def test_an_engine_without_an_export_exports_once_into_the_cache(tmp_path, trained_run, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    run = imgclf.load(run_dir, engine="onnx")
    assert not (run_dir / "model.onnx").exists()  # the run directory is left alone
    cached = export.current_export(run_dir, export.weights_digest(run_dir))
    assert cached is not None and cached.is_relative_to(export.export_cache_dir("").parent)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_onnx", no_export)
    again = imgclf.load(run_dir, engine="onnx")
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(pixels).save(photo)
    assert again.predict(photo).probabilities == pytest.approx(run.predict(photo).probabilities, abs=1e-6)


def test_an_export_of_other_weights_is_not_used(exported_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(exported_run, run_dir)
    assert export.current_export(run_dir, export.weights_digest(run_dir)) == run_dir
    state = imgclf.runs.load_tensors(run_dir / "model.safetensors")
    state = {name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    imgclf.files.save_tensors(run_dir / "model.safetensors", state)
    assert export.current_export(run_dir, export.weights_digest(run_dir)) is None


def test_a_broken_engine_is_refused_when_loaded(exported_run, monkeypatch):
    monkeypatch.setattr(OnnxRuntimeEngine, "__call__", lambda self, images: np.full((len(images), 2), 0.5))
    with pytest.raises(export.ExportError, match="does not answer as PyTorch does"):
        imgclf.load(exported_run, engine="onnx")


def test_auto_takes_the_next_engine_that_answers_as_pytorch_does(exported_run, monkeypatch, caplog):
    from imgclf.deploy.engines import OpenVinoEngine  # the dev install has OpenVINO and onnxruntime, fastest first

    assert installed_engines() == ["openvino", "onnx", "torch"]

    monkeypatch.setattr(OpenVinoEngine, "__call__", lambda self, images: np.full((len(images), 2), 0.5))
    assert imgclf.load(exported_run, engine="auto").engine.name == "onnx"
    assert "Not predicting with openvino" in caplog.text
    monkeypatch.setattr(OnnxRuntimeEngine, "__call__", lambda self, images: np.full((len(images), 2), 0.5))
    assert imgclf.load(exported_run, engine="auto").engine.name == "torch"


def test_three_classes_export_with_a_softmax(tmp_path):
    data = make_synthetic_classes(tmp_path / "data", {"red": 12, "green": 12, "blue": 12}, size=32)
    run = imgclf.train(data, model="seed-cnn", val_split=0.25, epochs=2, out=str(tmp_path / "run"))
    result = export.export_onnx(run)
    assert result.parity.passed
    onnx_run = imgclf.load(run.run_dir, engine="onnx")
    images = torch.stack([load_tensor(p, run.preprocessing) for p in sorted(data.rglob("*.png"))[:9]])
    probabilities = onnx_run.predict_tensors(images)
    assert probabilities.shape == (9, 3)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(9), atol=1e-5, rtol=0)
    torch.testing.assert_close(probabilities, run.predict_tensors(images), atol=1e-4, rtol=0)


def test_engine_names_are_checked():
    assert pick_engine("auto") == installed_engines()[0]
    assert pick_engine("torch") == "torch"
    with pytest.raises(ConfigError, match="Choose one of"):
        pick_engine("tensorrt")


def test_export_and_predict_from_the_command_line(tmp_path, trained_run, cars_planes, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "onnx")]) == 0
    assert "0 top-1 differences" in capsys.readouterr().out
    assert (tmp_path / "onnx" / "model.onnx").is_file() and not (run_dir / "model.onnx").exists()
    photos = str(cars_planes / "val_set")
    outputs = {}
    for engine in ("torch", "onnx"):
        assert main(["predict", str(run_dir), photos, "--engine", engine, "--format", "json"]) == 0
        outputs[engine] = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in outputs["onnx"]] == [p["label"] for p in outputs["torch"]]


def test_predicting_with_an_exported_engine_prints_only_the_answer(exported_run, cars_planes, capsys):
    """The parity check runs on every load, but its line is a diagnostic: it goes to the debug log."""
    photo = str(val_photos(cars_planes)[0])
    assert main(["predict", str(exported_run), photo, "--engine", "onnx"]) == 0
    captured = capsys.readouterr()
    assert "checked against PyTorch" not in captured.out + captured.err
    assert Path(photo).name in captured.out


def test_a_multi_label_export_holds_the_thresholds_and_its_engine_gives_the_same_label_sets(multi_label_run, tmp_path):
    photos = sorted(Path(multi_label_run.config.train.data).glob("*.jpg"))
    thresholds = json.loads((multi_label_run.run_dir / "thresholds.json").read_text())

    result = export.export_onnx(multi_label_run, tmp_path / "export")

    report = json.loads(result.report_path.read_text())
    assert report["multi_label"] and report["thresholds"] == thresholds and report["parity"]["passed"]
    metadata = {prop.key: prop.value for prop in onnx.load(result.onnx_path).metadata_props}
    assert json.loads(metadata["imgclf.thresholds"]) == thresholds
    onnx_run = imgclf.load(multi_label_run.run_dir, engine="onnx")
    assert [p.labels for p in onnx_run.predict(photos)] == [p.labels for p in multi_label_run.predict(photos)]
