"""The run directory's format: its file names, and reading its config, weights and temperature.

A run directory holds `config.json`, `model.safetensors` (the best weights), `calibration.json`, `history.csv`,
`loss.png`, `accuracy.png`, `summary.txt`, `skipped.csv` when files were skipped, `thresholds.json` when it is
multi-label, and `checkpoint/` for `--resume`. Reading it reads only JSON and safetensors: nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from imgclf.config import ConfigError, ImgclfError, RunConfig
from imgclf.models import BuildOptions, create_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CALIBRATION_FILE = "calibration.json"
HISTORY_FILE = "history.csv"
THRESHOLDS_FILE = "thresholds.json"
"""A multi-label run's threshold per class, tuned on the validation images for F1."""
UNSURE = "unsure"
CHECKPOINT_DIR = "checkpoint"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
"""The calibration temperatures imgclf fits and loads: beyond them probabilities are all but certain or flat."""


class RunError(ImgclfError):
    """A run directory is missing, incomplete, or holds files imgclf refuses to load."""


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; raises `RunError` when it is missing or not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing; the run directory is incomplete.")
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types for any malformed header
        raise RunError(f"{path} is not a valid safetensors file ({error}).") from None


def read_config(run_dir: str | Path) -> RunConfig:
    """Read a run's `config.json`, refusing directories that only hold pickled weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"Run directory {run_dir} does not exist. Give a folder made by `imgclf train`.")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        pickles = sorted(p.name for p in run_dir.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        hint = (
            f" It holds pickled files {pickles}, which imgclf never loads (unpickling can run code)." if pickles else ""
        )
        raise RunError(f"{run_dir} is not an imgclf run: {CONFIG_FILE} is missing.{hint}")
    values = _read_json(config_path, "Retrain, or restore the file.")
    try:
        return RunConfig.from_dict(values)
    except ConfigError as error:
        raise RunError(f"{config_path} holds a value imgclf cannot use. {error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{config_path} is not a valid imgclf run configuration ({error!r}).") from None


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of the run's `history.csv` as numbers (`epoch` a whole number); empty before the first epoch ends.

    Raises `RunError` when the file is damaged.
    """
    path = Path(run_dir) / HISTORY_FILE
    try:
        with path.open(newline="", encoding="utf-8") as file:
            return [
                {key: int(value) if key == "epoch" else float(value) for key, value in row.items()}
                for row in csv.DictReader(file)
            ]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError, csv.Error) as error:
        raise RunError(f"{path} is damaged ({error}). Train the run again, or resume it from its checkpoint.") from None


def _read_json(path: Path, what_to_do: str) -> object:
    """The values of a run's JSON file; raises `RunError` when it is not JSON imgclf can read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # RecursionError: arrays or objects nested thousands deep
        reason = "it is nested too deeply" if isinstance(error, RecursionError) else error
        raise RunError(f"{path} is not valid JSON ({reason}). {what_to_do}") from None


def build_model(config: RunConfig) -> torch.nn.Module:
    """A freshly initialised model of the run's architecture."""
    options = BuildOptions(pretrained=False, head=config.train.head)
    size = config.preprocessing.image_size
    return create_model(config.train.model, len(config.class_names), size, options, config.train.multi_label)


def read_temperature(run_dir: str | Path) -> float:
    """The run's calibration temperature from `calibration.json` (1.0, no change, when there is none).

    Raises `RunError` unless it is a number from `MIN_TEMPERATURE` to `MAX_TEMPERATURE`, the range fits keep to.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    values = _read_json(path, "Delete it to predict uncalibrated.")
    if not isinstance(values, dict) or "temperature" not in values:
        raise RunError(f"{path} holds no temperature. Delete it to predict uncalibrated.")
    temperature = values["temperature"]
    if type(temperature) not in (int, float) or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise RunError(
            f"Invalid temperature in {path}. Received: temperature={temperature!r}. Calibration fits a number "
            f"from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}; delete the file to predict uncalibrated, or retrain."
        )
    return float(temperature)


def read_thresholds(run_dir: str | Path, class_names: list[str]) -> list[float]:
    """A multi-label run's per-class thresholds from `thresholds.json`, in the order of `class_names`.

    Raises `RunError` when the file is missing, or lacks a class or holds a threshold outside [0, 1].
    """
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is a multi-label run without {THRESHOLDS_FILE}. Finish it: imgclf train --resume.")
    values = _read_json(path, "Finish the run again: delete the file and run imgclf train --resume.")
    thresholds = [values.get(name) if isinstance(values, dict) else None for name in class_names]
    if not all(type(value) in (int, float) and 0 <= value <= 1 for value in thresholds):
        raise RunError(
            f"Invalid thresholds in {path}. Received: {values!r}. Give each of {class_names} a number from 0 to 1."
        )
    return [float(value) for value in thresholds]


def load_model(run_dir: str | Path, config: RunConfig, weights: str = WEIGHTS_FILE) -> torch.nn.Module:
    """The run's PyTorch model with its trained weights."""
    model = build_model(config)
    state = load_tensors(Path(run_dir) / weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunError(f"{Path(run_dir) / weights} does not match the model in {CONFIG_FILE}: {error}") from None
    return model
