from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

from imgclf.cli import main
from imgclf.cli.config_file import load_toml
from imgclf.config import AugmentConfig, ConfigError, Preprocessing, TrainConfig, validate
from imgclf.training.loop import make_train_config

FLOAT_OPTIONS = [
    (config_class, field.name)
    for config_class in (TrainConfig, AugmentConfig)
    for field in dataclasses.fields(config_class)
    if "float" in field.type
]


def with_option(config_class: type, name: str, value: object) -> TrainConfig:
    config = TrainConfig(data="photos")
    if config_class is AugmentConfig:
        return dataclasses.replace(config, augment=dataclasses.replace(config.augment, **{name: value}))
    return dataclasses.replace(config, **{name: value})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(("config_class", "name"), FLOAT_OPTIONS)
def test_every_float_option_refuses_a_value_that_is_not_finite(config_class, name, value):
    option = f"--{name.replace('_', '-')}"
    with pytest.raises(ConfigError, match=f"Invalid option {option}. Received: {option}={value!r}.") as error:
        validate(with_option(config_class, name, value))
    assert error.value.option == option


def test_the_float_options_are_the_ones_the_command_line_takes_as_numbers():
    names = {name for _, name in FLOAT_OPTIONS}
    assert {"lr", "fine_tune_lr", "val_split", "min_confidence", "rotation", "zoom", "brightness"} <= names


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_confidence": "0.8"}, "Received: --min-confidence='0.8'. Give a number."),
        ({"image_size": 100_000}, "Received: --image-size=100000. Use 16 to 4096 pixels."),
        ({"track": "wandb"}, "Received: --track='wandb'. Choose one of ['none', 'mlflow']."),
    ],
)
def test_an_option_a_run_could_not_load_is_refused_before_training(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_train_config("photos", **options)


def test_cli_refuses_an_infinite_learning_rate_in_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path), "--lr", "inf", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: Invalid option --lr. Received: --lr=inf. Give a finite number."
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("line", "shown"), [("lr = inf", "inf"), ("val-split = nan", "nan"), ("zoom = -inf", "-inf")])
def test_a_toml_value_that_is_not_finite_is_refused_naming_the_file(tmp_path, line, shown):
    path = tmp_path / "options.toml"
    path.write_text(line + "\n")
    key = line.split(" = ")[0]
    with pytest.raises(ConfigError) as error:
        load_toml(path)
    assert str(error.value) == (
        f"Config file {path} has a bad value for {key}. Received: {key} = {shown}. Use a finite number."
    )


@pytest.mark.parametrize("line", ['config = "other.toml"', 'command = "predict"'])
def test_a_config_or_command_key_inside_a_config_file_is_refused(tmp_path, capsys, line):
    path = tmp_path / "options.toml"
    path.write_text(f"{line}\nepochs = 1\n")
    key, value = line.split(" = ")
    with pytest.raises(ConfigError, match=f"Config file {path} sets {key}, which only the command line gives."):
        load_toml(path)
    assert main(["train", str(tmp_path), "--config", str(path), "--out", str(tmp_path / "run")]) == 1
    assert f"Received: {key} = {value.replace(chr(34), chr(39))}. Remove the key." in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


RGB_ADVICE = "Give red, green and blue from 0 to 255, such as 124,116,104."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resize": "stretch"}, "Received: --resize='stretch'. Choose one of ['squash', 'crop', 'pad']."),
        ({"resize": None}, "Received: --resize=None. Give a string."),
        ({"pad_color": "1,2"}, f"Received: --pad-color='1,2'. {RGB_ADVICE}"),
        ({"pad_color": "0,0,256"}, f"Received: --pad-color='0,0,256'. {RGB_ADVICE}"),
        ({"pad_color": "grey"}, f"Received: --pad-color='grey'. {RGB_ADVICE}"),
        ({"pad_color": (1.5, 2, 3)}, f"Received: --pad-color=(1.5, 2, 3). {RGB_ADVICE}"),
        ({"pad_color": [-1, 0, 0]}, f"Received: --pad-color=[-1, 0, 0]. {RGB_ADVICE}"),
    ],
)
def test_resize_and_pad_color_are_checked_in_one_line(options, message):
    option = "--" + next(iter(options)).replace("_", "-")
    with pytest.raises(ConfigError, match=re.escape(f"Invalid option {option}. {message}")):
        make_train_config("photos", **options)


@pytest.mark.parametrize("given", ["124,116,104", " 124, 116 ,104", [124, 116, 104], (124, 116, 104)])
def test_pad_color_is_three_numbers_from_the_command_line_a_list_or_a_tuple(given):
    config = make_train_config("photos", resize="pad", pad_color=given)
    assert config.pad_color == (124, 116, 104)
    assert validate(TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))) == config  # as config.json


def test_cli_refuses_an_unknown_resize_mode_in_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path), "--resize", "stretch", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: Invalid option --resize. Received: --resize='stretch'. Choose one of ['squash', 'crop', 'pad']."
    ]
    assert not (tmp_path / "run").exists()


def test_a_saved_preprocessing_without_resize_squashes_on_black():
    saved = {"image_size": 64, "mean": [0.0] * 3, "std": [1.0] * 3, "interpolation": "bilinear"}
    assert Preprocessing.from_dict(saved) == Preprocessing(image_size=64)
    assert Preprocessing.from_dict(saved).resize == "squash"
    padded = Preprocessing.from_dict({**saved, "resize": "pad", "pad_color": [124, 116, 104]})
    assert padded == Preprocessing(image_size=64, resize="pad", pad_color=(124, 116, 104))
