"""A crop run and a pad run end to end: `Run.predict`, the ONNX export and the web service all bring a photo to
the model's square input as the run was trained (`imgclf train --resize`), and say how."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from tests.conftest import copy_photos

import imgclf
from imgclf.cli import main
from imgclf.config import Preprocessing
from imgclf.data.images import load_tensor
from imgclf.serve import create_app

GREY = [124, 116, 104]


@pytest.fixture(scope="module", params=["crop", "pad"])
def resized_run(request, tmp_path_factory, cars_planes) -> imgclf.Run:
    """seed-cnn trained briefly through the CLI with `--resize crop` or `--resize pad --pad-color 124,116,104`."""
    data = tmp_path_factory.mktemp("photos")
    copy_photos(cars_planes / "training_set", data / "train", 8)
    copy_photos(cars_planes / "val_set", data / "val", 3)
    out = data / "run"
    train = ["train", str(data / "train"), "--val", str(data / "val"), "--model", "seed-cnn", "--epochs", "2"]
    assert main([*train, "--resize", request.param, "--pad-color", ",".join(map(str, GREY)), "--out", str(out)]) == 0
    return imgclf.load(out)


@pytest.fixture(scope="module")
def photos(cars_planes) -> list[Path]:
    """Wide photos and two tall ones (one a large JPEG turned upright by its EXIF), whose crop and pad differ from
    their squash."""
    val = cars_planes / "val_set"
    return [
        *sorted(val.rglob("*.jpg"))[::8],
        val / "cars/dodge-3697010__340.jpg",
        val / "planes/united arab emirates 9.jpg",
    ]


def probabilities_of(run: imgclf.Run, pixels: list[torch.Tensor]) -> np.ndarray:
    return run.predict_tensors(torch.stack(pixels)).numpy()


def test_the_run_saves_its_resize_and_predicts_through_it(resized_run, photos):
    prep = resized_run.preprocessing
    saved = json.loads((resized_run.run_dir / "config.json").read_text())
    assert saved["preprocessing"]["resize"] == saved["train"]["resize"] == prep.resize
    assert saved["preprocessing"]["pad_color"] == GREY and prep.pad_color == tuple(GREY)
    expected = probabilities_of(resized_run, [load_tensor(photo, prep) for photo in photos])
    from_files = [list(p.probabilities.values()) for p in resized_run.predict(photos)]
    from_images = [list(p.probabilities.values()) for p in resized_run.predict([Image.open(p) for p in photos])]
    np.testing.assert_allclose(from_files, expected, atol=1e-6)
    np.testing.assert_allclose(from_images, expected, atol=1e-6)
    squashed = probabilities_of(resized_run, [load_tensor(photo, Preprocessing(prep.image_size)) for photo in photos])
    assert np.abs(squashed - expected).max() > 1e-4  # what the model sees does depend on the mode


def test_the_onnx_export_takes_the_pixels_already_cropped_or_padded_and_says_so(resized_run, photos, tmp_path):
    prep = resized_run.preprocessing
    result = resized_run.export(tmp_path)
    assert result.parity.passed
    assert json.loads(result.report_path.read_text())["preprocessing"]["resize"] == prep.resize
    metadata = {prop.key: prop.value for prop in onnx.load(result.onnx_path).metadata_props}
    assert metadata["imgclf.resize"] == prep.resize
    assert json.loads(metadata["imgclf.preprocessing"])["pad_color"] == GREY
    words = {"crop": "the centre 64x64 square kept", "pad": "centred on a 64x64 square of RGB 124,116,104"}
    assert words[prep.resize] in metadata["imgclf.input"]
    session = onnxruntime.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    pixels = np.stack([load_tensor(photo, prep).numpy() for photo in photos]).astype(np.float32) / 255
    expected = [list(p.probabilities.values()) for p in resized_run.predict(photos)]
    np.testing.assert_allclose(session.run(None, {"pixels": pixels})[0], expected, atol=1e-5)


def test_the_service_decodes_uploads_as_the_run_does(resized_run, photos):
    with TestClient(create_app(resized_run)) as client:
        info = client.get("/model").json()["preprocessing"]
        assert (info["resize"], info["pad_color"]) == (resized_run.preprocessing.resize, GREY)
        for photo in photos:
            answer = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
            assert answer["probabilities"] == pytest.approx(resized_run.predict(photo).probabilities, abs=1e-5)
