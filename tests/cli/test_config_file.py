"""`imgclf train --config FILE.toml`: the file fills the options the command line leaves unset, checked alike."""

from __future__ import annotations

import json

import pytest

from imgclf.cli import main


def test_train_with_a_config_file_that_the_command_line_overrides(small_photos, tmp_path, capsys):
    config = tmp_path / "options.toml"
    config.write_text('epochs = 3\nbatch-size = 4\naugment = "seed"\nzoom = 0.1\nseed = 5\n')
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(small_photos / "train"),
            "--val",
            str(small_photos / "val"),
            "--config",
            str(config),
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["epochs"] == 1  # the command line wins
    assert saved["batch_size"] == 4 and saved["seed"] == 5
    assert saved["augment"]["shear"] == 0.2 and saved["augment"]["zoom"] == 0.1
    captured = capsys.readouterr()
    assert "Found 16 images belonging to 2 classes." in captured.err
    assert "Epoch 1/1" in captured.err and "val_accuracy" in captured.err
    assert str(out / "loss.png") in captured.out


def test_config_file_with_an_unknown_key_is_a_user_error(tmp_path, capsys):
    config = tmp_path / "options.toml"
    config.write_text("epoch = 3\n")
    assert main(["train", "data", "--config", str(config)]) == 1
    assert "['epoch']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("epochs = 1.5", "bad value for epochs. Received: epochs = 1.5. Use a whole number."),
        ('epochs = "two"', "Received: epochs = 'two'. Use a whole number."),
        ('augment = "bogus"', "Use one of default, none, seed, seed-vgg16."),
        ("min-confidence = [0.5]", "Received: min-confidence = [0.5]. Use a number."),
        ('strict = "no"', "Received: strict = 'no'. Use true or false."),
        ("cache-mem = 0.5", "bad value for cache-mem."),
        ("no-decode-cache = 1", "Received: no-decode-cache = 1. Use true or false."),
    ],
)
def test_config_file_values_are_checked_like_the_command_line(small_photos, tmp_path, capsys, line, message):
    config = tmp_path / "options.toml"
    config.write_text(line + "\n")
    assert main(["train", str(small_photos / "train"), "--config", str(config), "--out", str(tmp_path / "r")]) == 1
    error = capsys.readouterr().err
    assert f"Config file {config} has a" in error and message in error, error
    assert not (tmp_path / "r").exists()


def test_an_out_of_range_value_from_the_config_file_names_the_file(small_photos, tmp_path, capsys):
    config = tmp_path / "options.toml"
    config.write_text("epochs = 0\n")
    assert main(["train", str(small_photos / "train"), "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"(--epochs is set in the config file {config}.)")
    assert main(["train", str(small_photos / "train"), "--config", str(config), "--epochs", "-1"]) == 1
    assert "config file" not in capsys.readouterr().err  # the command line's value is to blame


def test_the_command_line_wins_over_the_config_files_validation_choice(small_photos, tmp_path):
    config = tmp_path / "options.toml"
    config.write_text("val-split = 0.25\nno-decode-cache = true\nepochs = 1\n")
    out = tmp_path / "run"
    arguments = ["train", str(small_photos / "train"), "--config", str(config), "--out", str(out)]
    assert main([*arguments, "--val", str(small_photos / "val"), "--model", "seed-cnn"]) == 0
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["val"] == str(small_photos / "val") and saved["val_split"] is None
    assert saved["decode_cache"] is False


def test_resize_and_pad_color_from_a_config_file_are_saved_with_the_run(small_photos, tmp_path):
    config = tmp_path / "options.toml"
    config.write_text('resize = "pad"\npad-color = "124,116,104"\nepochs = 1\nmodel = "seed-cnn"\n')
    out = tmp_path / "run"
    data = ["train", str(small_photos / "train"), "--val", str(small_photos / "val")]
    assert main([*data, "--config", str(config), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["preprocessing"]["resize"] == "pad" and saved["preprocessing"]["pad_color"] == [124, 116, 104]
    assert saved["train"]["resize"] == "pad" and saved["train"]["pad_color"] == [124, 116, 104]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('resize = "stretch"', "Received: --resize='stretch'. Choose one of ['squash', 'crop', 'pad']. (--resize"),
        ('pad-color = "1,2"', "Received: --pad-color='1,2'. Give red, green and blue from 0 to 255"),
    ],
)
def test_a_bad_resize_or_pad_color_in_a_config_file_names_the_file(small_photos, tmp_path, capsys, line, message):
    config = tmp_path / "options.toml"
    config.write_text(line + "\n")
    assert main(["train", str(small_photos / "train"), "--config", str(config)]) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and error.endswith(f"is set in the config file {config}.)") and "\n" not in error
