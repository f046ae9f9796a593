"""The studio's training recipes, and the options of a training or resume job checked before any process starts.

A recipe is a named set of `imgclf.train` options (`TrainConfig`'s names); the user's own options win over it:

    POST /api/projects/cars-planes/train {"recipe": "better", "options": {"epochs": 10}}
    # is imgclf train PROJECT/data --val-split 0.2 --fine-tune 2 --epochs 10 --out PROJECT/runs/RUN

Every option goes through the library's own checks here, in the server's process, so that a mistake is a 400 with
the library's one line rather than a job that fails after its worker has started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgclf.config import ImgclfError, TrainConfig
from imgclf.demo import EXPERIMENTS
from imgclf.models import get_spec
from imgclf.studio.workspace import Project, StudioError
from imgclf.training.options import make_train_config, resumed_config
from imgclf.training.phases import plan_phases

VAL_SPLIT = 0.2
"""The share of a project's photos held out for validation: a project has one data folder, no separate one."""
SET_BY_STUDIO = ("data", "out")
"""Options the studio sets itself: the project's data folder, and a new run folder in its `runs/`."""


@dataclass(frozen=True)
class Recipe:
    """A named way to train: `options` are `imgclf.train`'s keyword options."""

    name: str
    title: str
    description: str
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description, "options": self.options}


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "quick",
            "Quick",
            "Trains a small head on a frozen, pretrained EfficientNet-Lite0: accurate from a few dozen photos per "
            "class, and fast, since the backbone sees each photo once (its features are cached).",
            {"model": "efficientnet_lite0"},
        ),
        Recipe(
            "better",
            "Better",
            "Trains the head like Quick, then fine-tunes the last 2 blocks of EfficientNet-Lite0 for 5 more epochs "
            "at a lower learning rate: slower, usually a little more accurate.",
            {"model": "efficientnet_lite0", "fine_tune": "2"},
        ),
        Recipe(
            "cnn",
            "The tutorial's CNN",
            "The tutorial's small CNN, trained from scratch at 64 px with its augmentation (30 epochs of 30 steps "
            "of 32 photos): no pretrained weights, so it needs more photos to do well.",
            dict(EXPERIMENTS["cnn"]),
        ),
        Recipe(
            "advanced",
            "Advanced",
            "Any of imgclf train's options, by their names in TrainConfig (model, epochs, lr, augment, "
            "fine_tune, ...); the defaults are the command line's.",
        ),
    )
}


@dataclass(frozen=True)
class Training:
    """What a training job runs: `imgclf.train`'s keyword options (a new run's `out` is chosen when it starts),
    its model, and how many epochs it trains in all, fine-tuning included (the progress events count up to it)."""

    options: dict
    model: str
    epochs: int


def plan_training(project: Project, recipe: str, options: dict) -> Training:
    """The training of `project` with `recipe`, the user's `options` on top, checked as `imgclf train` checks.

    Raises `StudioError` with the library's message for an unknown recipe or option, or a value it refuses.
    """
    if recipe not in RECIPES:
        raise StudioError(f"Unknown recipe. Received: recipe={recipe!r}. Choose one of {list(RECIPES)}.")
    if not isinstance(options, dict):
        raise StudioError(
            f"options must be an object of imgclf train's options by name. Received: options={options!r}. "
            'Give, for example, {"epochs": 10}.'
        )
    refused = sorted(set(options) & set(SET_BY_STUDIO))
    if refused:
        raise StudioError(
            f"The studio sets {refused} itself: the project's data folder and a new folder in its runs. "
            f"Received: options={options!r}. Leave them out."
        )
    if options.get("track", "none") != "none":
        raise StudioError(
            "The studio does not log to MLflow: its store would be written in the working folder, outside the "
            f"workspace. Received: track={options['track']!r}. Use imgclf train --track mlflow for that."
        )
    chosen = {**RECIPES[recipe].options, **options}
    if chosen.get("val") is None and chosen.get("val_split") is None:
        chosen["val_split"] = VAL_SPLIT
    with _as_studio_errors():
        config = make_train_config(project.data_dir, **chosen)
        return Training({"data": str(project.data_dir), **chosen}, config.model, _epochs_of(config))


def plan_resume(run_dir: Path, epochs: int | None = None) -> Training:
    """Resuming `run_dir` from its last saved epoch, with more `epochs` in all if given, checked as
    `imgclf train --resume` checks (a finished run needs more epochs)."""
    options = {"resume": str(run_dir)} | ({} if epochs is None else {"epochs": epochs})
    with _as_studio_errors():
        config = resumed_config(run_dir, **{key: value for key, value in options.items() if key != "resume"})[1]
        return Training(options, config.model, _epochs_of(config))


def _epochs_of(config: TrainConfig) -> int:
    return plan_phases(config, get_spec(config.model).backbone)[-1].last_epoch


@contextlib.contextmanager
def _as_studio_errors() -> Iterator[None]:
    """Turn the library's `ImgclfError` into a `StudioError` with the same line (a 400 for the page)."""
    try:
        yield
    except StudioError:
        raise
    except ImgclfError as error:
        raise StudioError(str(error)) from None
