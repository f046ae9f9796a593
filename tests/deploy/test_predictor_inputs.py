"""What `Run.predict` accepts from Python users, and how a run shows itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.deploy.predictor import InputError


def test_a_folder_predicts_its_images_recursively_in_sorted_order(trained_run, cars_planes):
    folder = cars_planes / "val_set"
    predictions = trained_run.predict(folder)
    expected = sorted(str(p) for p in folder.rglob("*.jpg"))
    assert [p.file for p in predictions] == expected
    assert predictions == trained_run.predict(str(folder))


def test_a_list_mixes_files_folders_pil_images_and_arrays(trained_run, cars_planes):
    photo = sorted((cars_planes / "val_set" / "planes").glob("*.jpg"))[0]
    picture = Image.open(photo).convert("RGB")
    mixed = trained_run.predict([photo, picture, np.asarray(picture), cars_planes / "val_set" / "cars"])
    assert [p.file for p in mixed[:3]] == [str(photo), "<PIL image>", "<array>"]
    assert len(mixed) == 3 + len(list((cars_planes / "val_set" / "cars").glob("*.jpg")))
    # A PIL image and its array get the same probabilities (a path decodes JPEGs in draft mode: close to them).
    assert mixed[2].probabilities == pytest.approx(mixed[1].probabilities, abs=1e-6)
    assert mixed[1].probabilities == pytest.approx(mixed[0].probabilities, abs=0.05)


def test_one_array_gives_one_prediction(trained_run, cars_planes):
    photo = sorted((cars_planes / "val_set" / "cars").glob("*.jpg"))[0]
    prediction = trained_run.predict(np.asarray(Image.open(photo).convert("RGB")))
    assert isinstance(prediction, imgclf.Prediction) and prediction.label in trained_run.class_names


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (3, "Cannot predict a int. Received: images=3"),
        ([Path("a.jpg"), 2.5], "Cannot predict a float"),
        (np.zeros((8, 8), dtype=np.uint8), r"H×W×3 uint8 \(RGB\). Received: an array of shape \(8, 8\)"),
        (np.zeros((8, 8, 3), dtype=np.float32), "dtype float32"),
    ],
)
def test_wrong_inputs_are_imgclf_errors_in_the_received_style(trained_run, images, message):
    with pytest.raises(InputError, match=message) as raised:
        trained_run.predict(images)
    assert isinstance(raised.value, imgclf.ImgclfError)


@pytest.mark.parametrize("batch_size", [0, -1, "8", 2.0])
def test_a_bad_batch_size_is_named(trained_run, cars_planes, batch_size):
    with pytest.raises(InputError, match=f"Received: batch_size={batch_size!r}"):
        trained_run.predict(cars_planes / "val_set", batch_size=batch_size)


def test_a_folder_without_images_says_so(trained_run, tmp_path):
    with pytest.raises(imgclf.DatasetError, match="Found no images"):
        trained_run.predict(tmp_path)


def test_history_and_metrics_are_plain_python_data(trained_run):
    history, metrics = trained_run.history, trained_run.metrics
    assert [record["epoch"] for record in history] == list(range(1, len(history) + 1))
    assert all(isinstance(record["epoch"], int) and isinstance(record["val_loss"], float) for record in history)
    assert isinstance(metrics["accuracy"], float) and metrics["class_names"] == trained_run.class_names


def test_a_run_shows_its_model_classes_folder_and_accuracy(trained_run):
    text = repr(trained_run)
    assert text.startswith("Run(model='seed-cnn', classes=['cars', 'planes'], run_dir=")
    assert str(trained_run.run_dir) in text
    assert f"val_accuracy={trained_run.metrics['accuracy']:.4f})" in text


def test_the_notebook_view_shows_curves_metrics_and_the_confusion_matrix(trained_run):
    page = trained_run._repr_html_()
    assert page.count("data:image/png;base64,") == 2
    assert f"{trained_run.metrics['accuracy']:.4f}" in page
    matrix = trained_run.metrics["confusion_matrix"]
    assert "".join(f"<td>{count}</td>" for count in matrix[0]) in page


def test_the_notebook_view_escapes_class_names(tmp_path):
    from imgclf.demo import shipped_data

    data = tmp_path / "data"
    for split in ("training_set", "val_set"):
        for source, target in (("cars", "<i>cars"), ("planes", "planes")):
            (data / split / target).mkdir(parents=True)
            for photo in sorted((shipped_data() / split / source).glob("*.jpg"))[:4]:
                (data / split / target / photo.name).write_bytes(photo.read_bytes())
    run = imgclf.train(data / "training_set", val=data / "val_set", model="seed-cnn", epochs=1, out=tmp_path / "run")
    page = run._repr_html_()
    assert "<i>cars" not in page and "&lt;i&gt;cars" in page
