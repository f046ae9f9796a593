"""imgclf: turn folders of labelled photos into a trained, evaluated image classifier.

import imgclf
run = imgclf.train("cars-planes/training_set", val="cars-planes/val_set", augment="seed")
imgclf.load(run.run_dir).predict("plane.jpg")

The names below load their module on first use, so `import imgclf` (and `imgclf --help`) does not import
PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for editors, type checkers and the API reference; at run time `__getattr__` imports them
    from imgclf.config import AugmentConfig, ImgclfError, Preprocessing, TrainConfig
    from imgclf.data.folders import DatasetError
    from imgclf.data.images import ImageError, open_image
    from imgclf.deploy.predictor import Prediction, Run, load
    from imgclf.evaluation.explain import explain_image, explain_labels
    from imgclf.models import create_model, list_models, register_model
    from imgclf.runs import RunError
    from imgclf.training.loop import TrainingInterrupted, train

__version__ = "0.1.0"

# Each public name and the module that defines it.
_HOMES = {
    "AugmentConfig": "imgclf.config",
    "DatasetError": "imgclf.data.folders",
    "ImageError": "imgclf.data.images",
    "ImgclfError": "imgclf.config",
    "Prediction": "imgclf.deploy.predictor",
    "Preprocessing": "imgclf.config",
    "Run": "imgclf.deploy.predictor",
    "RunError": "imgclf.runs",
    "TrainConfig": "imgclf.config",
    "TrainingInterrupted": "imgclf.training.loop",
    "create_model": "imgclf.models",
    "explain_image": "imgclf.evaluation.explain",
    "explain_labels": "imgclf.evaluation.explain",
    "list_models": "imgclf.models",
    "load": "imgclf.deploy.predictor",
    "open_image": "imgclf.data.images",
    "register_model": "imgclf.models",
    "train": "imgclf.training.loop",
}

__all__ = [
    "AugmentConfig",
    "DatasetError",
    "ImageError",
    "ImgclfError",
    "Prediction",
    "Preprocessing",
    "Run",
    "RunError",
    "TrainConfig",
    "TrainingInterrupted",
    "create_model",
    "explain_image",
    "explain_labels",
    "list_models",
    "load",
    "open_image",
    "register_model",
    "train",
]


def __getattr__(name: str) -> object:
    """A public name, imported from its module the first time it is asked for (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'imgclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
