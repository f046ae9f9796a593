"""The run directory: what a run writes, and the folder it claims."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tests.conftest import read_history

import imgclf
from imgclf.data.images import load_tensor
from imgclf.deploy import export
from imgclf.runs import load_tensors
from imgclf.training.options import make_train_config
from imgclf.training.writer import claim_run_dir

QUICK = {"epochs": 2, "batch_size": 8, "seed": 0}
train_cnn = functools.partial(imgclf.train, model="seed-cnn")


def test_a_run_writes_the_whole_run_directory(small_photos, tmp_path):
    run = train_cnn(
        small_photos / "train",
        val=str(small_photos / "val"),
        augment="seed",
        out=str(tmp_path / "run"),
        **QUICK,
    )
    names = {p.name for p in run.run_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "history.csv",
        "loss.png",
        "accuracy.png",
        "summary.txt",
    } <= names
    assert "skipped.csv" not in names
    assert not [p for p in run.run_dir.rglob("*.tmp")]
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["class_names"] == ["cars", "planes"]
    assert config["preprocessing"]["image_size"] == 64
    assert config["train"]["augment"]["shear"] == 0.2
    assert "torch" in config["versions"]
    assert config["hardware"]["device"] == "cpu" and config["hardware"]["processes"] == 1
    assert config["hardware"]["precision"] in ("fp32", "bf16")
    history = read_history(run.run_dir)
    assert list(history[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert "813,217" in (run.run_dir / "summary.txt").read_text()
    assert (run.run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_keeps_validation_inputs_for_the_parity_check(small_photos, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PARITY_INPUTS", 4)  # of 6 validation photos, 3 of each class
    (small_photos / "val" / "cars" / "a-broken.jpg").write_text("not a photo")  # the first of its class
    run = train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), **QUICK)
    kept = load_tensors(run.run_dir / "parity-inputs.safetensors")
    with safe_open(run.run_dir / "parity-inputs.safetensors", "pt") as file:
        metadata = file.metadata()
    files = json.loads(metadata["files"])
    assert sorted(Path(file).parent.name for file in files) == ["cars", "cars", "planes", "planes"]  # in turns
    assert "a-broken.jpg" not in {Path(file).name for file in files}
    assert kept["images"].dtype == torch.uint8 and kept["images"].shape == (4, 3, 64, 64)
    assert torch.equal(kept["images"], torch.stack([load_tensor(file, run.preprocessing) for file in files]))
    torch.testing.assert_close(kept["probabilities"], run.predict_tensors(kept["images"]))
    assert metadata["weights_sha256"] == export.weights_digest(run.run_dir)
    assert float(metadata["temperature"]) == run.temperature != 1.0


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_train_config(tmp_path, model="seed-cnn")
    folders = [claim_run_dir(config)[0] for _ in range(3)]
    assert len(set(folders)) == 3 and all(folder.is_dir() for folder in folders)


def test_an_existing_run_is_never_overwritten(small_photos, tmp_path):
    train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(imgclf.RunError, match="already holds a run"):
        train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)
