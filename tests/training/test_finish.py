"""Finishing a run: a run stopped between its last epoch and its calibration is finished by `--resume`."""

from __future__ import annotations

import json

import pytest
from tests.conftest import read_history

import imgclf
from imgclf.training import finish


def test_resume_finishes_a_run_stopped_before_its_calibration(small_photos, tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finish, "calibrate", ctrl_c)  # Ctrl-C once the last epoch is saved
    common = {"val": str(small_photos / "val"), "model": "seed-cnn", "epochs": 2, "batch_size": 8, "seed": 0}
    with pytest.raises(imgclf.TrainingInterrupted, match="epoch 2 is saved.*--resume"):
        imgclf.train(small_photos / "train", out=str(tmp_path / "run"), **common)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "calibration.json").exists()

    run = imgclf.train(resume=tmp_path / "run")
    assert [row["epoch"] for row in read_history(run.run_dir)] == ["1", "2"]  # no epoch trained again
    names = {path.name for path in run.run_dir.iterdir()}
    assert {"calibration.json", "metrics.json", "predictions.csv", "report.html", "parity-inputs.safetensors"} <= names
    # The temperature is the one the run would have had without the interruption.
    whole = imgclf.train(small_photos / "train", out=str(tmp_path / "whole"), progress=False, **common)
    assert run.temperature == pytest.approx(whole.temperature, rel=1e-3)
    assert json.loads((run.run_dir / "metrics.json").read_text())["accuracy"] == whole.metrics["accuracy"]
    with pytest.raises(imgclf.RunError, match="already trained 2 epochs"):
        imgclf.train(resume=tmp_path / "run")
