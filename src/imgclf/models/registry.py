"""The model registry: `create_model(name, num_classes)` builds any registered architecture by name.

Adding an architecture is one decorated function in its own module:

    @register_model("seed-cnn", Preprocessing(image_size=64))
    def seed_cnn(num_outputs: int, image_size: int, options: BuildOptions) -> nn.Module: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imgclf.config import ConfigError, Preprocessing


@dataclass(frozen=True)
class BuildOptions:
    """How to start a model: ImageNet weights (`pretrained`), a local `weights` file, and the `head` name.

    Only backbone models use them; a model trained from scratch refuses `weights` and `head`.
    """

    pretrained: bool = False
    weights: str | None = None
    head: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and the preprocessing it expects by default."""

    name: str
    build: Callable[[int, int, BuildOptions], nn.Module]
    preprocessing: Preprocessing
    backbone: bool = False


_REGISTRY: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, Callable[[str], ModelSpec]] = {}


def register_model(name: str, preprocessing: Preprocessing, backbone: bool = False) -> Callable:
    """Decorator that adds a builder `build(num_outputs, image_size, options) -> nn.Module` under `name`.

    `backbone=True` marks a pretrained feature extractor with a head (frozen, fine-tuned, feature-cached).
    """

    def add(
        build: Callable[[int, int, BuildOptions], nn.Module],
    ) -> Callable[[int, int, BuildOptions], nn.Module]:
        _REGISTRY[name] = ModelSpec(name, build, preprocessing, backbone)
        return build

    return add


def register_family(prefix: str, spec: Callable[[str], ModelSpec]) -> None:
    """Resolve every name that starts with `prefix` (such as `timm:`) through `spec(name)`."""
    _FAMILIES[prefix] = spec


def list_models() -> list[str]:
    """The sorted registered names; `create_model` also takes any `timm:<name>` or `torchvision:<name>`."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; raises `ConfigError` listing the known names."""
    family = next((prefix for prefix in _FAMILIES if name.startswith(prefix)), None)
    if family is not None:
        return _FAMILIES[family](name)
    if name not in _REGISTRY:
        raise ConfigError(
            f"Unknown model. Received: --model={name!r}. Choose one of {list_models()}, "
            "or any timm:<name> or torchvision:<name>."
        )
    return _REGISTRY[name]


def num_outputs(num_classes: int, multi_label: bool = False) -> int:
    """One logit for two classes (a sigmoid, as the tutorial), else one logit per class; a `multi_label` model has
    one logit per class always (each class its own sigmoid, so two labels may both be present)."""
    return 1 if num_classes == 2 and not multi_label else num_classes


def create_model(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    options: BuildOptions = BuildOptions(),
    multi_label: bool = False,
) -> nn.Module:
    """Build the registered model `name` with an output layer for `num_classes` classes (see `num_outputs`).

    `image_size` defaults to the size the model's preprocessing names.

    >>> create_model("seed-cnn", num_classes=2)(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1])
    >>> create_model("efficientnet_lite0", 5, options=BuildOptions(pretrained=True, head="mlp"))
    """
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes. Received: num_classes={num_classes}.")
    spec = get_spec(name)
    if not spec.backbone and (options.weights or options.head):
        raise ConfigError(
            f"{name} is trained from scratch: it has no pretrained weights or separate head. "
            f"Received: --weights={options.weights}, --head={options.head}. Use a backbone such as efficientnet_lite0."
        )
    return spec.build(num_outputs(num_classes, multi_label), image_size or spec.preprocessing.image_size, options)


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes): a sigmoid for one logit (two classes), else a softmax."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def calibrated_probabilities(logits: torch.Tensor, temperature: float, multi_label: bool) -> torch.Tensor:
    """A run's probabilities (N, classes) of its model's logits: `to_probabilities` of the logits over the run's
    temperature, or for a multi-label run each label's own sigmoid of them."""
    scaled = logits.float() / temperature
    return torch.sigmoid(scaled) if multi_label else to_probabilities(scaled)


def summarize(model: nn.Module, preprocessing: Preprocessing) -> str:
    """torchinfo's layer table: output shapes, parameter counts, trainable and non-trainable totals."""
    import copy

    import torchinfo

    size = preprocessing.image_size
    probe = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    stats = torchinfo.summary(
        probe,
        input_size=(1, 3, size, size),
        col_names=("output_size", "num_params", "trainable"),
        verbose=0,
        device="cpu",
    )
    return str(stats)
