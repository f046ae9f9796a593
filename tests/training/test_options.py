"""Options and folders, checked before training: bad options, the validation split, warnings."""

from __future__ import annotations

import functools
import json

import pytest
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.training.options import make_train_config

train_cnn = functools.partial(imgclf.train, model="seed-cnn")


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
