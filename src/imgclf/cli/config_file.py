"""`imgclf train --config FILE.toml`: the file's values fill the options the command line leaves unset.

# options.toml: option names as on the command line, without the dashes in front
epochs = 10
batch-size = 16
no-decode-cache = true
"""

from __future__ import annotations

import argparse
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from imgclf.config import ConfigError, ImgclfError


def load_toml(path: str | Path) -> dict:
    """Read a `--config` file: a flat TOML table whose keys are option names (`batch-size` or `batch_size`)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist. Received: --config={path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML: {error}") from None
    for key in ("config", "command"):  # one config file cannot name another, nor choose the command
        if key in values:
            raise ConfigError(
                f"Config file {path} sets {key}, which only the command line gives. "
                f"Received: {key} = {values[key]!r}. Remove the key."
            )
    for key, value in values.items():
        if type(value) is float and not math.isfinite(value):
            raise ConfigError(
                f"Config file {path} has a bad value for {key}. Received: {key} = {value!r}. Use a finite number."
            )
    return {key.replace("-", "_"): value for key, value in values.items()}


def apply_config_file(args: argparse.Namespace, options: Mapping[str, argparse.Action]) -> None:
    """Set the options of `args` the command line left unset from the file `args.config`, each checked and
    converted as argparse does a command-line value; `args.options_from_config` names the options it set.

    `options`: the command's options by destination (`cache_mem_mb` for `--cache-mem`).
    """
    values = _file_values(args.config)
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise ImgclfError(
            f"Config file {args.config} has unknown options {unknown}. "
            f"Use option names, e.g. epochs = 10 or batch-size = 16."
        )
    # The command line wins, also over the config file's other way of choosing the validation images.
    for given, other in (("val", "val_split"), ("val_split", "val")):
        if getattr(args, given) is not None:
            values.pop(other, None)
    converted = {key: _converted(options[key], value, args.config) for key, value in values.items()}
    unset = {key: value for key, value in converted.items() if getattr(args, key) is None}
    for key, value in unset.items():
        setattr(args, key, value)
    args.options_from_config = {options[key].option_strings[-1] for key in unset if options[key].option_strings}


def _file_values(path: str) -> dict:
    """The `--config` file's values by option destination: `cache-mem` is `cache_mem_mb`, and
    `no-decode-cache = true` (as on the command line) is `decode_cache = false`."""
    values = load_toml(path)
    for negative in ("no_decode_cache", "no_feature_cache"):
        if negative in values:
            value = values.pop(negative)
            if not isinstance(value, bool):
                raise ImgclfError(_bad_value(path, negative.replace("_", "-"), value, "true or false"))
            values[negative.removeprefix("no_")] = not value
    return {("cache_mem_mb" if key == "cache_mem" else key): value for key, value in values.items()}


def _converted(action: argparse.Action, value: object, path: str) -> object:
    """A `--config` file's value for `action`, checked and converted as argparse does a command-line value."""
    if action.nargs == 0:  # a flag: the value is what it sets, e.g. strict = true or decode-cache = false
        expected = "true or false"
        if isinstance(value, bool):
            return value
    else:
        expected = f"one of {', '.join(map(str, action.choices))}" if action.choices else _kind(action.type)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:
                converted = action.type(str(value)) if action.type else str(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                converted = None
            if converted is not None and (not action.choices or converted in action.choices):
                return converted
    key = action.option_strings[-1].removeprefix("--") if action.nargs != 0 else action.dest.replace("_", "-")
    raise ImgclfError(_bad_value(path, key, value, expected))


def _bad_value(path: str, key: str, value: object, expected: str) -> str:
    return f"Config file {path} has a bad value for {key}. Received: {key} = {value!r}. Use {expected}."


def _kind(convert: object) -> str:
    return {int: "a whole number", float: "a number"}.get(convert, "a string")
