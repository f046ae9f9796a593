"""The Python API takes what Python users pass: Paths for paths, and a clear error for a value of the wrong type."""

from __future__ import annotations

import json

import pytest

import imgclf
from imgclf.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": "fast"}, "Received: --lr='fast'. Give a number."),
        ({"epochs": 2.5}, "Received: --epochs=2.5. Give a whole number."),
        ({"strict": "no"}, "Received: --strict='no'. Give True or False."),
        ({"val": 3}, r"Received: --val=3. Give a path \(str or Path\)."),
        ({"batch_size": True}, "Received: --batch-size=True. Give a whole number."),
        ({"model": None}, "Received: --model=None. Give a string."),
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        imgclf.train(tmp_path, **options)


def test_paths_may_be_path_objects_and_are_saved_as_strings(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train", val=small_photos / "val", model="seed-cnn", epochs=1, out=tmp_path / "run"
    )
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["data"] == str(small_photos / "train") and saved["val"] == str(small_photos / "val")
    assert run.run_dir == tmp_path / "run"


def test_fine_tune_may_be_a_number(tmp_path):
    with pytest.raises(imgclf.DatasetError):  # the options pass; the empty folder does not
        imgclf.train(tmp_path, fine_tune=2, lr=1)


def test_a_config_object_is_checked_like_keyword_options(tmp_path):
    config = TrainConfig(data=str(tmp_path), lr=float("inf"))
    with pytest.raises(ConfigError, match="--lr"):
        imgclf.train(config=config)
