"""The predictor behind `imgclf.load`: calibrated probabilities, `unsure` below --min-confidence, flip TTA."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import imgclf


def test_the_temperature_changes_probabilities_not_labels(trained_run, cars_planes, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    photos = sorted((cars_planes / "val_set").rglob("*.jpg"))[:8]
    calibrated = imgclf.load(run_dir, engine="torch").predict(photos)
    (run_dir / "calibration.json").unlink()
    raw = imgclf.load(run_dir, engine="torch").predict(photos)
    assert [p.label for p in calibrated] == [p.label for p in raw]
    assert any(abs(a.probability - b.probability) > 1e-3 for a, b in zip(calibrated, raw))


def test_min_confidence_labels_unsure(trained_run, cars_planes):
    run = imgclf.load(trained_run.run_dir, engine="torch")
    photos = sorted((cars_planes / "val_set").rglob("*.jpg"))
    confidences = [p.probability for p in run.predict(photos)]
    threshold = float(np.median(confidences))
    run.min_confidence = threshold
    predictions = run.predict(photos)
    unsure = [p for p in predictions if p.label == "unsure"]
    assert len(unsure) == sum(c < threshold for c in confidences) > 0
    assert all(p.index is None and p.probability < threshold for p in unsure)
    assert all(p.probability >= threshold and p.label in run.class_names for p in predictions if p not in unsure)


def test_min_confidence_saved_with_the_run_and_checked(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train",
        model="seed-cnn",
        val=str(small_photos / "val"),
        epochs=1,
        min_confidence=0.99,
        out=str(tmp_path / "run"),
    )
    assert imgclf.load(run.run_dir).min_confidence == 0.99
    assert all(p.label == "unsure" for p in run.predict(sorted((small_photos / "val").rglob("*.jpg"))))
    with pytest.raises(imgclf.ImgclfError, match="--min-confidence"):
        imgclf.train(small_photos / "train", model="seed-cnn", min_confidence=1.5, out=str(tmp_path / "bad"))


def test_tta_averages_the_flipped_image(trained_run, cars_planes):
    run = imgclf.load(trained_run.run_dir, engine="torch")
    photo = next((cars_planes / "val_set" / "planes").glob("*.jpg"))
    flipped = Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    expected = (run.predict(photo).probabilities["planes"] + run.predict(flipped).probabilities["planes"]) / 2
    assert run.predict(photo, tta=True).probabilities["planes"] == pytest.approx(expected, abs=1e-4)


def test_a_run_without_calibration_is_loaded_with_a_warning(trained_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    imgclf.load(run_dir, engine="torch")
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    (run_dir / "calibration.json").unlink()
    run = imgclf.load(run_dir, engine="torch")
    assert run.temperature == 1.0
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "has no calibration.json" in warnings[0] and f"imgclf train --resume {run_dir}" in warnings[0]
    assert f"imgclf report {run_dir}" in warnings[0]


def test_each_batch_is_decoded_and_predicted_on_one_torch_thread_of_its_own(trained_run, cars_planes, monkeypatch):
    """Decoding and the model took turns with every core, and PyTorch's threads spun at each layer of a busy machine."""
    engine_call, calls = type(trained_run.engine).__call__, []

    def watched(engine, images):
        calls.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads(), len(images)))
        return engine_call(engine, images)

    monkeypatch.setattr(type(trained_run.engine), "__call__", watched)
    trained_run.predict(sorted((cars_planes / "val_set").rglob("*.jpg")), batch_size=8)
    assert calls == [(False, 1, 8)] * 5


def test_threads_started_after_predicting_get_the_callers_torch_threads(trained_run, cars_planes):
    """The workers' torch.set_num_threads(1) became the default of every thread started later in the process."""
    before = torch.get_num_threads()
    trained_run.predict(sorted((cars_planes / "val_set").rglob("*.jpg"))[:4], batch_size=2)
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [before]


def test_batches_give_the_predictions_of_each_image_alone_in_input_order(trained_run, cars_planes, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    photos = sorted((cars_planes / "val_set").rglob("*.jpg"))[:16]
    inputs = [tmp_path / "empty.jpg", *photos[:7], tmp_path / "text.jpg", Image.open(photos[7]), *photos[8:]]
    batched = trained_run.predict(inputs, batch_size=3)
    alone = [trained_run.predict([image], batch_size=1)[0] for image in inputs]
    outcome = [(p.file, p.label, p.index, p.error) for p in batched]
    assert outcome == [(p.file, p.label, p.index, p.error) for p in alone]
    assert [p.error is not None for p in batched] == [True, *[False] * 7, True, *[False] * 9]
    for together, apart in zip(batched, alone):
        assert together.probabilities == pytest.approx(apart.probabilities, abs=1e-6)
