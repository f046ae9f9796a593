"""The tutorial's experiment 1 in one call, on car and plane photos shipped inside the package.

imgclf demo                      # the shipped photos
imgclf demo --data cars-planes   # any folder with training_set/, val_set/ and optionally test/
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from imgclf.data import DatasetError, index_folder, list_images
from imgclf.engine import ProgressCallback, train
from imgclf.runs import Prediction, Run

# The tutorial's experiment 1: seed CNN, its augmentation, Adam, 30 epochs of 30 steps of 32 images.
EXPERIMENT_1 = {
    "model": "seed-cnn",
    "augment": "seed",
    "optimizer": "adam",
    "lr": 1e-3,
    "epochs": 30,
    "steps_per_epoch": 30,
    "batch_size": 32,
}
PHOTOS_PER_CLASS = 3


@dataclass
class DemoResult:
    """The trained run and its predictions on photos it did not train on."""

    run: Run
    predictions: list[Prediction]


def shipped_data() -> Path:
    """The car/plane photos inside the package (`training_set/`, `val_set/`)."""
    return Path(str(files("imgclf") / "demo_data" / "cars-planes"))


def unseen_photos(data: Path) -> list[str]:
    """`data/test/` when present, else the first few validation photos of each class."""
    if (data / "test").is_dir():
        return list_images([data / "test"])
    index = index_folder(data / "val_set")
    picked: list[str] = []
    for label in range(len(index.class_names)):
        picked += [f for f, lab in zip(index.files, index.labels) if lab == label][:PHOTOS_PER_CLASS]
    return picked


def run_demo(
    data: str | Path | None = None,
    out: str | Path | None = None,
    progress: ProgressCallback | None = None,
    **overrides,
) -> DemoResult:
    """Train experiment 1 on `data` (default: the shipped photos) and predict a handful of unseen photos."""
    data = Path(data) if data is not None else shipped_data()
    for split in ("training_set", "val_set"):
        if not (data / split).is_dir():
            raise DatasetError(
                f"{data} has no {split}/ folder. Received: --data={data}. The demo expects "
                f"{data}/training_set/<class>/ and {data}/val_set/<class>/."
            )
    options = {**EXPERIMENT_1, **overrides}
    run = train(
        data / "training_set",
        val=str(data / "val_set"),
        out=None if out is None else str(out),
        progress=progress,
        **options,
    )
    return DemoResult(run, run.predict(unseen_photos(data)))
