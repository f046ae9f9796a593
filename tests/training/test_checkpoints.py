"""Checkpoints: a resumed run continues exactly, and a damaged one is named."""

from __future__ import annotations

import functools

import pytest
from tests.conftest import read_history

import imgclf

train_cnn = functools.partial(imgclf.train, model="seed-cnn")


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


def test_a_damaged_checkpoint_state_is_named_when_resuming(small_photos, tmp_path):
    run = train_cnn(small_photos / "train", val=str(small_photos / "val"), out=str(tmp_path / "run"), epochs=1)
    (run.run_dir / "checkpoint" / "state.json").write_text('{"epoch": 1, "hist')
    with pytest.raises(imgclf.RunError, match="state.json is damaged"):
        imgclf.train(resume=run.run_dir, epochs=2)
