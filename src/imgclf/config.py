"""Typed options for a training run, their validation, and loading them from TOML.

Every concern has one frozen dataclass. `TrainConfig` is resolved once (presets applied, arguments checked)
and saved into the run's `config.json`, which is enough to rebuild the run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from dataclasses import dataclass, field


class ImgclfError(Exception):
    """Base of every error caused by the user's input; the CLI prints its one line and exits with `exit_code`."""

    exit_code = 1


class ConfigError(ImgclfError):
    """An option has a value imgclf cannot use; `option` names it (`--epochs`) when one option is to blame."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RESIZE_MODES = ("squash", "crop", "pad")
"""How a photo becomes the square input: squashed whole, its centre square, or whole with pad-colour bars."""
DEFAULT_PAD_COLOR = (0, 0, 0)
"""Black, as Keras pads (`pad_to_aspect_ratio`); ImageNet's mean grey is 124,116,104."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: brought to `image_size`² as `resize` says, scaled to [0, 1], then
    normalised.

    `resize`: "squash" stretches the whole image to the square; "crop" scales its short side to `image_size`
    and keeps the centre square; "pad" scales its long side to `image_size` and fills the rest with `pad_color`
    (0–255 RGB). Saved in every run so that predict and evaluate feed the model exactly what it was trained on.
    """

    image_size: int = 64
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"
    resize: str = "squash"
    pad_color: tuple[int, int, int] = DEFAULT_PAD_COLOR

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        """The preprocessing a run's `config.json` saved; raises `ConfigError` naming the first key it cannot use.

        A run saved before `resize` existed squashes, as every run did then.
        """
        size, interpolation = values["image_size"], values.get("interpolation", "bilinear")
        resize, pad_color = values.get("resize", "squash"), values.get("pad_color", list(DEFAULT_PAD_COLOR))
        _require_saved(
            type(size) is int and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE,
            "preprocessing.image_size",
            size,
            f"Use a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}.",
        )
        _require_saved(
            interpolation in INTERPOLATIONS,
            "preprocessing.interpolation",
            interpolation,
            f"Choose one of {list(INTERPOLATIONS)}.",
        )
        _require_saved(resize in RESIZE_MODES, "preprocessing.resize", resize, f"Choose one of {list(RESIZE_MODES)}.")
        _require_saved(_is_rgb(pad_color), "preprocessing.pad_color", pad_color, RGB_ADVICE)
        mean, std = _channel_values(values, "mean"), _channel_values(values, "std")
        _require_saved(min(std) > 0, "preprocessing.std", list(std), "Every channel's std must be positive.")
        return cls(size, mean, std, interpolation, resize, tuple(pad_color))


RGB_ADVICE = "Give red, green and blue from 0 to 255, such as 124,116,104."


def _is_rgb(color: object) -> bool:
    """Whether `color` is a list or tuple of 3 whole numbers from 0 to 255."""
    return (
        isinstance(color, list | tuple)
        and len(color) == 3
        and all(type(value) is int and 0 <= value <= 255 for value in color)
    )


def _channel_values(values: dict, key: str) -> tuple[float, float, float]:
    """`values[key]` as one finite number per colour channel (red, green, blue)."""
    channels = values[key]
    _require_saved(
        isinstance(channels, list) and len(channels) == 3 and all(_is_finite_number(value) for value in channels),
        f"preprocessing.{key}",
        channels,
        "Give a list of 3 finite numbers, one per colour channel.",
    )
    return tuple(float(value) for value in channels)


def _is_finite_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms applied to training images, with Keras `ImageDataGenerator` semantics.

    Angles are in degrees. `zoom` z draws a zoom factor per axis in [1 - z, 1 + z] (above 1 shows more of the
    image). Shifts are fractions of the image size. Colour jitter factors are drawn in [1 - x, 1 + x].
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    fill_mode: str = "nearest"

    @property
    def is_identity(self) -> bool:
        return self == dataclasses.replace(AugmentConfig(), fill_mode=self.fill_mode)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # The tutorial's ImageDataGenerator(shear_range=0.2, zoom_range=0.2, horizontal_flip=True).
    "seed": AugmentConfig(shear=0.2, zoom=0.2, horizontal_flip=True),
    # The tutorial's experiment 2 (VGG16): rotation 40°, shifts 0.2, shear 0.2°, zoom 0.2, flip.
    "seed-vgg16": AugmentConfig(
        rotation=40.0, width_shift=0.2, height_shift=0.2, shear=0.2, zoom=0.2, horizontal_flip=True
    ),
    # Mild geometry and colour changes that suit photos of objects.
    "default": AugmentConfig(
        rotation=10.0,
        width_shift=0.1,
        height_shift=0.1,
        zoom=0.15,
        horizontal_flip=True,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
    ),
}

FILL_MODES = ("nearest", "constant", "reflect")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CLASS_WEIGHTS = ("none", "auto")
HEADS = ("linear", "mlp", "seed")
ENGINES = ("auto", "torch", "onnx", "openvino")
TRACKERS = ("none", "mlflow")
PRESETS = ("fast", "balanced", "best")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `imgclf train` needs; the defaults are the CLI's defaults."""

    data: str
    """The folder of class sub-folders; with `labels`, the folder the CSV's paths are relative to."""
    val: str | None = None
    val_split: float | None = None
    labels: str | None = None
    """A CSV of file,label rows (optional split column) to train on instead of DATA's class sub-folders."""
    multi_label: bool = False
    """Each image has a set of labels (a CSV's "shirt;hat"): sigmoid outputs, thresholds tuned per class."""
    model: str = "efficientnet_lite0"
    image_size: int | None = None
    resize: str = "squash"
    pad_color: tuple[int, int, int] | str = DEFAULT_PAD_COLOR
    """0–255 RGB, or the command line's "R,G,B"; `validate` makes it a tuple."""
    head: str | None = None
    weights: str | None = None
    fine_tune: str | None = None
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None
    feature_cache: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 32
    steps_per_epoch: int | None = None
    seed: int = 0
    patience: int | None = None
    class_weight: str = "none"
    min_confidence: float | None = None
    precision: str = "auto"
    device: str = "auto"
    strict: bool = False
    cache_mem_mb: int = 2048
    decode_cache: bool = True
    workers: int = 2
    out: str | None = None
    track: str = "none"
    preset: str = "fast"
    time_limit: str | None = None
    """`90s`, `10m`, `1h` or `1h30m`: checked by `training.budget.Deadline`."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_flat_dict(self) -> dict:
        """The options in one level, the augmentation's named `augment.zoom` and so on (MLflow's params)."""
        values = self.to_dict()
        augment = values.pop("augment")
        return {**values, **{f"augment.{name}": value for name, value in augment.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        values = dict(values)
        values["augment"] = AugmentConfig(**values.get("augment", {}))
        return cls(**values)


def _require(condition: bool, option: str, value: object, what_to_do: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid option {option}. Received: {option}={value!r}. {what_to_do}", option)


def _require_saved(condition: bool, key: str, value: object, allowed: str) -> None:
    """`_require` for a key of a run's `config.json`, named as the file writes it (`preprocessing.std`)."""
    if not condition:
        raise ConfigError(f"Invalid {key}. Received: {key}={value!r}. {allowed}", key)


def check_min_confidence(value: float | None) -> None:
    """`--min-confidence` is None (never unsure) or a probability in (0, 1]; raises `ConfigError` otherwise."""
    if value is not None:
        _require(
            0.0 < value <= 1.0,
            "--min-confidence",
            value,
            "Give a probability such as 0.8; below it predictions are labelled unsure.",
        )


PATH_OPTIONS = ("data", "val", "labels", "weights", "out")
_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_KIND_ADVICE = {
    "int": "Give a whole number.",
    "float": "Give a number.",
    "str": "Give a string.",
    "bool": "Give True or False.",
}


def _with_checked_types(config: TrainConfig) -> TrainConfig:
    """`config` with paths (str or os.PathLike) as strings; raises `ConfigError` for a value of the wrong type."""
    paths: dict[str, object] = {}
    if isinstance(config.fine_tune, int) and not isinstance(config.fine_tune, bool):
        paths["fine_tune"] = str(config.fine_tune)  # `fine_tune=2` from Python means `--fine-tune 2`
    for item in dataclasses.fields(TrainConfig):
        value = getattr(config, item.name)
        option = f"--{item.name.replace('_', '-')}"
        if item.name in PATH_OPTIONS:
            _require(value is None or isinstance(value, str | os.PathLike), option, value, "Give a path (str or Path).")
            paths[item.name] = None if value is None else os.fspath(value)
            continue
        kind = str(item.type).removesuffix(" | None")
        value = paths.get(item.name, value)
        if kind in _KINDS and not (value is None and str(item.type).endswith("None")):
            wrong_bool = isinstance(value, bool) and kind != "bool"
            _require(isinstance(value, _KINDS[kind]) and not wrong_bool, option, value, _KIND_ADVICE[kind])
            _require(not isinstance(value, float) or math.isfinite(value), option, value, "Give a finite number.")
    return dataclasses.replace(config, **paths)


def validate(config: TrainConfig) -> TrainConfig:
    """Check every option before any file is touched; returns `config` (paths as strings) or raises `ConfigError`."""
    config = _with_checked_types(config)
    config = dataclasses.replace(config, pad_color=_pad_color(config.pad_color))
    _validate_training(config)
    _validate_resources(config)
    _validate_augment(config.augment)
    return config


def _validate_training(config: TrainConfig) -> None:
    _require(
        config.val is None or config.val_split is None,
        "--val-split",
        config.val_split,
        "Give either --val DIR or --val-split, not both.",
    )
    if config.labels is not None:
        _require(config.val is None, "--val", config.val, "With --labels, give val rows or --val-split; drop --val.")
    if config.multi_label:
        _require(config.labels is not None, "--multi-label", True, "Multi-label data is a CSV: add --labels CSV.")
        _require(config.class_weight == "none", "--class-weight", config.class_weight, "Multi-label runs take none.")
    if config.val_split is not None:
        _require(0.0 < config.val_split < 1.0, "--val-split", config.val_split, "Use a fraction such as 0.2.")
    _require(config.optimizer in OPTIMIZERS, "--optimizer", config.optimizer, f"Choose one of {list(OPTIMIZERS)}.")
    _require(config.lr > 0, "--lr", config.lr, "The learning rate must be positive.")
    _require(config.epochs >= 1, "--epochs", config.epochs, "Train for at least 1 epoch.")
    _require(config.batch_size >= 1, "--batch-size", config.batch_size, "Use a positive batch size.")
    if config.steps_per_epoch is not None:
        _require(config.steps_per_epoch >= 1, "--steps-per-epoch", config.steps_per_epoch, "Use a positive count.")
    if config.patience is not None:
        _require(config.patience >= 1, "--patience", config.patience, "Use a positive number of epochs.")
    if config.image_size is not None:
        size_fits = MIN_IMAGE_SIZE <= config.image_size <= MAX_IMAGE_SIZE
        _require(size_fits, "--image-size", config.image_size, f"Use {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels.")
    _require(config.resize in RESIZE_MODES, "--resize", config.resize, f"Choose one of {list(RESIZE_MODES)}.")
    _require(config.head is None or config.head in HEADS, "--head", config.head, f"Choose one of {list(HEADS)}.")
    if config.fine_tune is not None:
        _require(
            config.fine_tune == "all" or (config.fine_tune.isdigit() and int(config.fine_tune) > 0),
            "--fine-tune",
            config.fine_tune,
            "Give a number of backbone blocks to unfreeze, such as 2, or 'all'.",
        )
    _require(config.fine_tune_epochs >= 1, "--fine-tune-epochs", config.fine_tune_epochs, "Use at least 1 epoch.")
    if config.fine_tune_lr is not None:
        _require(config.fine_tune_lr > 0, "--fine-tune-lr", config.fine_tune_lr, "The learning rate must be positive.")
    _require(
        config.class_weight in CLASS_WEIGHTS,
        "--class-weight",
        config.class_weight,
        f"Choose one of {list(CLASS_WEIGHTS)}.",
    )
    check_min_confidence(config.min_confidence)
    _require(config.preset in PRESETS, "--preset", config.preset, f"Choose one of {list(PRESETS)}.")


def _pad_color(color: object) -> tuple[int, int, int]:
    """`--pad-color` as a tuple: from "R,G,B" (the command line, a TOML file) or a list or tuple of 3 ints."""
    rgb = color
    if isinstance(color, str) and all(part.strip().isdecimal() for part in color.split(",")):
        rgb = [int(part) for part in color.split(",")]
    _require(_is_rgb(rgb), "--pad-color", color, RGB_ADVICE)
    return tuple(rgb)


def _validate_resources(config: TrainConfig) -> None:
    _require(config.precision in PRECISIONS, "--precision", config.precision, f"Choose one of {list(PRECISIONS)}.")
    _require(config.device in DEVICES, "--device", config.device, f"Choose one of {list(DEVICES)}.")
    _require(config.cache_mem_mb >= 0, "--cache-mem", config.cache_mem_mb, "Give a budget in MB (0 streams).")
    _require(config.workers >= 0, "--workers", config.workers, "Use 0 or more DataLoader workers.")
    _require(config.track in TRACKERS, "--track", config.track, f"Choose one of {list(TRACKERS)}.")
    _require(
        isinstance(config.decode_cache, bool),
        "decode-cache",
        config.decode_cache,
        "Use true or false (--no-decode-cache turns the cache of decoded images off).",
    )


def _validate_augment(augment: AugmentConfig) -> None:
    _require(
        augment.fill_mode in FILL_MODES,
        "--fill-mode",
        augment.fill_mode,
        f"Choose one of {list(FILL_MODES)}.",
    )
    _require(0 <= augment.zoom < 1, "--zoom", augment.zoom, "Use a fraction in [0, 1), such as 0.2.")
    for name in ("width_shift", "height_shift", "brightness", "contrast", "saturation"):
        value = getattr(augment, name)
        _require(0 <= value < 1, f"--{name.replace('_', '-')}", value, "Use a fraction in [0, 1).")
    for name in ("rotation", "shear"):
        value = getattr(augment, name)
        _require(0 <= value <= 180, f"--{name}", value, "Use an angle in degrees between 0 and 180.")


@dataclass(frozen=True)
class RunConfig:
    """What a run directory's `config.json` holds: enough to rebuild the model and its preprocessing."""

    train: TrainConfig
    class_names: list[str]
    preprocessing: Preprocessing
    versions: dict[str, str] = field(default_factory=dict)
    dataset: dict[str, object] = field(default_factory=dict)
    hardware: dict[str, object] = field(default_factory=dict)
    """What the run trained on: device, processes, precision, threads per process."""
    recipe: dict[str, object] = field(default_factory=dict)
    """What a `--preset` run tried, each score, what won and why (empty for other runs)."""

    def to_dict(self) -> dict:
        recipe = {"recipe": self.recipe} if self.recipe else {}
        return {
            "format": "imgclf-run/1",
            "model": self.train.model,
            "class_names": list(self.class_names),
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "train": self.train.to_dict(),
            "dataset": self.dataset,
            "hardware": self.hardware,
            "versions": self.versions,
            **recipe,
        }

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """The run config `to_dict` saved, checked as strictly as options are on the command line.

        Raises `ConfigError` naming the first key whose value imgclf cannot use; a missing key is a `KeyError`.
        """
        for key in ("train", "preprocessing"):
            _require_saved(isinstance(values[key], dict), key, values[key], "Give a JSON object.")
        return cls(
            train=validate(TrainConfig.from_dict(values["train"])),
            class_names=_class_names(values["class_names"]),
            preprocessing=Preprocessing.from_dict(values["preprocessing"]),
            versions=dict(values.get("versions", {})),
            dataset=dict(values.get("dataset", {})),
            hardware=dict(values.get("hardware", {})),
            recipe=dict(values.get("recipe", {})),
        )


def _class_names(names: object) -> list[str]:
    """A run's class names: 2 or more distinct, non-empty strings, in the model's output order."""
    _require_saved(
        isinstance(names, list) and len(names) >= 2 and all(isinstance(name, str) and name for name in names),
        "class_names",
        names,
        "Give a list of 2 or more class names.",
    )
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    _require_saved(not repeated, "class_names", names, f"Each class is named once; {repeated} appear more than once.")
    return list(names)
