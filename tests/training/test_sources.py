"""Where batches come from: unreadable files skipped or refused, streaming against decoding into memory."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
import torch
from tests.conftest import make_synthetic_classes, read_history

import imgclf
from imgclf.data.folders import SKIPPED_SHOWN, DatasetError
from imgclf.runs import load_tensors

QUICK = {"epochs": 2, "batch_size": 8, "seed": 0}
train_cnn = functools.partial(imgclf.train, model="seed-cnn")


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


@pytest.mark.parametrize("cache_mem_mb", [2048, 0], ids=["decoded", "streamed"])
def test_many_unreadable_files_are_named_ten_then_counted_in_one_line(tmp_path, caplog, cache_mem_mb):
    data = make_synthetic_classes(tmp_path / "data", {"red": 12, "green": 12})
    for number in range(30):
        (data / "red" / f"broken-{number:02d}.png").write_text("not an image")
    run = imgclf.train(
        data,
        model="seed-cnn",
        val_split=0.25,
        epochs=1,
        batch_size=8,
        image_size=24,
        cache_mem_mb=cache_mem_mb,
        out=str(tmp_path / "run"),
    )
    messages = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    named = [message for message in messages if message.startswith("Skipped ") and "broken-" in message]
    counted = [message for message in messages if message.startswith("Skipped 30 unreadable files in all")]
    assert len(named) <= 2 * SKIPPED_SHOWN  # at most ten of each source as streaming meets them
    assert len(counted) == 1 and str(run.run_dir / "skipped.csv") in counted[0]
    with (run.run_dir / "skipped.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 30


def test_imbalance_is_counted_on_the_readable_images(tmp_path, caplog):
    data = make_synthetic_classes(tmp_path / "data", {"red": 13, "green": 4})
    make_synthetic_classes(tmp_path / "val", {"red": 2, "green": 2})
    for number in range(10):  # 14 green files, as many as red, but only 4 that can be read
        (data / "green" / f"broken-{number}.png").write_text("not an image")
    options = {"model": "seed-cnn", "epochs": 1, "batch_size": 8, "image_size": 24, "val": str(tmp_path / "val")}
    imgclf.train(data, out=str(tmp_path / "run"), **options)
    imbalanced = [record.getMessage() for record in caplog.records if "imbalanced" in record.getMessage()]
    assert len(imbalanced) == 1 and "{'green': 4, 'red': 13}" in imbalanced[0]
