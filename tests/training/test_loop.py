"""The training loop: epochs, seeds, Ctrl-C, early stopping, divergence, and a run that stops before its first epoch."""

from __future__ import annotations

import functools
import json
import signal

import pytest
import torch
from tests.conftest import make_synthetic_classes, read_history

import imgclf
from imgclf.data.folders import DatasetError
from imgclf.runs import load_tensors
from imgclf.training import checkpoints, loop
from imgclf.training.steps import compute_loss

QUICK = {"epochs": 2, "batch_size": 8, "seed": 0}
train_cnn = functools.partial(imgclf.train, model="seed-cnn")


def test_same_seed_gives_the_same_history(small_photos, tmp_path):
    runs = [
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            augment="seed",
            out=str(tmp_path / name),
            **QUICK,
        )
        for name in ("a", "b")
    ]
    first, second = (read_history(run.run_dir) for run in runs)
    for a, b in zip(first, second):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6)
    other = train_cnn(
        small_photos / "train",
        val=str(small_photos / "val"),
        augment="seed",
        out=str(tmp_path / "c"),
        **{**QUICK, "seed": 1},
    )
    assert read_history(other.run_dir)[0]["loss"] != first[0]["loss"]


def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(small_photos, tmp_path):
    def interrupt_in_epoch_2(epoch: int, step: int, steps: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(imgclf.TrainingInterrupted, match="--resume"):
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            out=str(tmp_path / "run"),
            progress=interrupt_in_epoch_2,
            epochs=3,
            batch_size=8,
        )
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    assert (tmp_path / "run" / "loss.png").exists()
    resumed = imgclf.train(resume=tmp_path / "run")
    assert [row["epoch"] for row in read_history(resumed.run_dir)] == ["1", "2", "3"]


def test_ctrl_c_before_the_first_epoch_ends_leaves_nothing_behind(small_photos, tmp_path, monkeypatch):
    def interrupt_at_once(epoch: int, step: int, steps: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    common = {"val": str(small_photos / "val"), "epochs": 2, "batch_size": 8}
    for out in (None, str(tmp_path / "chosen")):
        with pytest.raises(imgclf.TrainingInterrupted, match="before the first epoch ended; nothing was saved"):
            train_cnn(small_photos / "train", out=out, progress=interrupt_at_once, **common)
    assert not (tmp_path / "chosen").exists()
    assert list((tmp_path / "runs").iterdir()) == []
    # A folder the user made keeps its files, and a run that never saved an epoch does not block --out.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(imgclf.TrainingInterrupted):
        train_cnn(small_photos / "train", out=str(tmp_path / "mine"), progress=interrupt_at_once, **common)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    run = train_cnn(small_photos / "train", out=str(tmp_path / "mine"), **common)
    assert [row["epoch"] for row in read_history(run.run_dir)] == ["1", "2"]


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(small_photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (small_photos / "train" / "boats").mkdir()
    for out in (None, str(tmp_path / "chosen")):
        with pytest.raises(DatasetError, match="boats"):
            train_cnn(small_photos / "train", val=str(small_photos / "val"), out=out, epochs=1)
    assert not (tmp_path / "chosen").exists()
    assert list((tmp_path / "runs").iterdir()) == []


def test_ctrl_c_while_an_epoch_is_saved_waits_for_its_files(small_photos, tmp_path, monkeypatch):
    original = checkpoints.save_checkpoint

    def interrupted_save(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C just as the checkpoint starts
        original(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_checkpoint", interrupted_save)
    with pytest.raises(imgclf.TrainingInterrupted, match="epoch 1 is saved"):
        train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=3)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    assert [row["epoch"] for row in read_history(tmp_path / "run")] == ["1"]


def test_early_stopping_stops_when_val_loss_stalls(tmp_path):
    data = make_synthetic_classes(tmp_path / "data", {"red": 12, "green": 12})
    # A learning rate this large cannot lower val_loss for long.
    run = train_cnn(
        data,
        val_split=0.25,
        out=str(tmp_path / "run"),
        epochs=30,
        patience=2,
        lr=5.0,
        optimizer="sgd",
        batch_size=8,
        image_size=24,
    )
    history = read_history(run.run_dir)
    assert len(history) < 30
    best = min(range(len(history)), key=lambda i: float(history[i]["val_loss"]))
    assert len(history) - 1 - best == 2


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_epoch(small_photos, tmp_path, monkeypatch):
    steps = []

    def nan_at_epoch_2_step_2(logits, labels, weights, multi_label):
        loss = compute_loss(logits, labels, weights, multi_label)
        steps.append(loss)
        return loss * float("nan") if len(steps) == 4 else loss  # 2 steps an epoch: epoch 2, step 2

    monkeypatch.setattr(loop, "compute_loss", nan_at_epoch_2_step_2)
    with pytest.raises(loop.TrainingDiverged) as stopped:
        train_cnn(
            small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), **{**QUICK, "epochs": 3}
        )
    message = str(stopped.value)
    assert "nan at epoch 2, step 2 of 2" in message and "Epoch 1, the last with finite losses, is saved" in message
    assert "a lower --lr (this run: 0.001)" in message and "\n" not in message
    assert len(steps) == 4  # stopped at once, not at the end of the epoch
    text = (tmp_path / "run" / "checkpoint" / "state.json").read_text()
    state = json.loads(text, parse_constant=lambda name: pytest.fail(f"state.json holds {name}"))
    assert state["epoch"] == 1 and state["best_val_loss"] == float(read_history(tmp_path / "run")[0]["val_loss"])
    assert [row["epoch"] for row in read_history(tmp_path / "run")] == ["1"]
    best = load_tensors(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in best.values() if tensor.is_floating_point())


def test_a_huge_learning_rate_stops_in_the_first_epoch_and_leaves_nothing(small_photos, tmp_path):
    with pytest.raises(loop.TrainingDiverged, match=r"at epoch 1, step \d of 2\. Nothing was saved\. .*1e\+30"):
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            out=str(tmp_path / "run"),
            lr=1e30,
            optimizer="sgd",
            **QUICK,
        )
    assert not (tmp_path / "run").exists()
