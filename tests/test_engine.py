from __future__ import annotations

import csv
import functools
import json
import signal
from pathlib import Path

import pytest
import torch
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.data.folders import DatasetError
from imgclf.runs import load_tensors
from imgclf.training import checkpoints
from imgclf.training.options import make_train_config
from imgclf.training.steps import class_weights, compute_loss
from imgclf.training.writer import claim_run_dir

QUICK = {"epochs": 2, "batch_size": 8, "seed": 0}
train_cnn = functools.partial(imgclf.train, model="seed-cnn")


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as file:
        return list(csv.DictReader(file))


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


def test_resume_continues_from_the_saved_epoch(small_photos, tmp_path):
    common = {"val": str(small_photos / "val"), "augment": "seed", "batch_size": 8, "seed": 0}
    straight = train_cnn(small_photos / "train", out=str(tmp_path / "straight"), epochs=3, **common)
    first_part = train_cnn(small_photos / "train", out=str(tmp_path / "resumed"), epochs=2, **common)
    resumed = imgclf.train(resume=first_part.run_dir, epochs=3)
    assert resumed.run_dir == first_part.run_dir
    assert [row["epoch"] for row in read_history(resumed.run_dir)] == ["1", "2", "3"]
    for a, b in zip(read_history(straight.run_dir), read_history(resumed.run_dir)):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-5)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), abs=1e-5)


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


def test_a_damaged_checkpoint_state_is_named_when_resuming(small_photos, tmp_path):
    run = train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)
    (run.run_dir / "checkpoint" / "state.json").write_text('{"epoch": 1, "hist')
    with pytest.raises(imgclf.RunError, match="state.json is damaged"):
        imgclf.train(resume=run.run_dir, epochs=2)


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


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_train_config(tmp_path, model="seed-cnn")
    folders = [claim_run_dir(config)[0] for _ in range(3)]
    assert len(set(folders)) == 3 and all(folder.is_dir() for folder in folders)


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


def test_unreadable_files_are_skipped_and_listed(small_photos, tmp_path):
    (small_photos / "train" / "cars" / "empty.jpg").write_bytes(b"")
    (small_photos / "train" / "planes" / "notes.jpg").write_text("not a photo")
    run = train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), **QUICK)
    with (run.run_dir / "skipped.csv").open() as file:
        rows = {Path(row["file"]).name: row["reason"] for row in csv.DictReader(file)}
    assert set(rows) == {"empty.jpg", "notes.jpg"}
    assert "empty" in rows["empty.jpg"]
    assert json.loads((run.run_dir / "config.json").read_text())["dataset"]["train_count"] == 16


def test_a_streamed_batch_of_only_unreadable_files_is_passed_over(small_photos, tmp_path):
    (small_photos / "train" / "cars" / "empty.jpg").write_bytes(b"")
    (small_photos / "val" / "planes" / "notes.jpg").write_text("not a photo")
    run = train_cnn(
        small_photos / "train",
        val=str(small_photos / "val"),
        out=str(tmp_path / "run"),
        cache_mem_mb=0,
        workers=0,
        epochs=2,
        batch_size=1,
    )
    history = read_history(run.run_dir)
    assert all(0 < float(row[key]) < float("inf") for row in history for key in ("loss", "val_loss"))
    with (run.run_dir / "skipped.csv").open() as file:
        assert {Path(row["file"]).name for row in csv.DictReader(file)} == {"empty.jpg", "notes.jpg"}


def test_strict_fails_before_training_naming_the_file(small_photos, tmp_path):
    (small_photos / "train" / "cars" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.jpg"):
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            out=str(tmp_path / "run"),
            strict=True,
            **QUICK,
        )
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_strict_streaming_also_fails_before_training(small_photos, tmp_path):
    (small_photos / "train" / "cars" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.jpg"):
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            out=str(tmp_path / "run"),
            strict=True,
            cache_mem_mb=0,
            workers=0,
            **QUICK,
        )


def test_streaming_and_in_memory_train_the_same_model(small_photos, tmp_path):
    runs = [
        train_cnn(
            small_photos / "train",
            val=str(small_photos / "val"),
            augment="seed",
            out=str(tmp_path / name),
            cache_mem_mb=budget,
            workers=0,
            **QUICK,
        )
        for name, budget in (("memory", 2048), ("stream", 0))
    ]
    weights = [load_tensors(run.run_dir / "model.safetensors") for run in runs]
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], atol=1e-6)
    assert json.loads((runs[1].run_dir / "config.json").read_text())["dataset"]["in_memory"] is False


def test_many_classes_train_with_softmax_and_class_weights(tmp_path):
    data = make_synthetic_classes(tmp_path / "data", {"red": 20, "green": 20, "blue": 5})
    run = train_cnn(
        data,
        val_split=0.2,
        out=str(tmp_path / "run"),
        epochs=8,
        batch_size=8,
        image_size=24,
        class_weight="auto",
        seed=0,
    )
    assert run.model(torch.zeros(1, 3, 24, 24)).shape == (1, 3)
    assert float(read_history(run.run_dir)[-1]["val_accuracy"]) == 1.0


def test_val_split_is_stratified_and_recorded(tmp_path):
    data = make_synthetic_classes(tmp_path / "data", {"red": 20, "green": 10})
    run = train_cnn(data, val_split=0.2, out=str(tmp_path / "run"), epochs=1, image_size=24)
    dataset = json.loads((run.run_dir / "config.json").read_text())["dataset"]
    assert dataset["val_class_counts"] == [2, 4]  # sorted classes: green, red
    assert dataset["train_class_counts"] == [8, 16]


def test_imbalance_is_warned_about_unless_class_weights_are_on(tmp_path, caplog):
    data = make_synthetic_classes(tmp_path / "data", {"red": 20, "green": 4})
    train_cnn(data, val_split=0.25, out=str(tmp_path / "run"), epochs=1, image_size=24)
    assert any("imbalanced" in record.message for record in caplog.records)
    caplog.clear()
    train_cnn(data, val_split=0.25, out=str(tmp_path / "weighted"), epochs=1, image_size=24, class_weight="auto")
    assert not any("imbalanced" in record.message for record in caplog.records)


def test_validating_on_the_training_folder_is_warned_about_once(tmp_path, caplog):
    data = make_synthetic_classes(tmp_path / "data", {"red": 4, "green": 4})
    train_cnn(data, val=str(data), out=str(tmp_path / "run"), epochs=1, image_size=24)
    overlaps = [record for record in caplog.records if "is the training folder" in record.message]
    assert len(overlaps) == 1 and overlaps[0].levelname == "WARNING"


def test_an_existing_run_is_never_overwritten(small_photos, tmp_path):
    train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(imgclf.RunError, match="already holds a run"):
        train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert torch.allclose(weights, torch.tensor([4 / 6, 2.0]))


def test_loss_is_binary_cross_entropy_for_one_logit():
    logits, labels = torch.tensor([[0.0], [2.0]]), torch.tensor([1, 0])
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert torch.isclose(compute_loss(logits, labels, None), expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"val_split": 1.5}, "val-split"),
        ({"val": "x", "val_split": 0.2}, "not both"),
        ({"batch_size": 0}, "batch-size"),
        ({"augment": "heavy"}, "augment"),
        ({"zoom_range": 0.2}, "Unknown training options"),
        ({"model": "seed-cnn", "fine_tune": "2"}, "trained from scratch.*--fine-tune is for a pretrained backbone"),
    ],
)
def test_bad_options_are_refused_before_any_file_is_read(options, message):
    with pytest.raises(imgclf.ImgclfError, match=message):
        make_train_config("/nonexistent", **options)
