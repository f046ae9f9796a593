"""The tutorial's experiments in one call, on car and plane photos shipped inside the package.

imgclf demo                      # the shipped photos
imgclf demo --data cars-planes   # any folder with training_set/, val_set/ and optionally test/
imgclf demo --experiment both    # also experiment 2, the frozen ImageNet VGG16 (needs its weights)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.data.folders import DatasetError, index_folder, list_images
from imgclf.deploy.predictor import Prediction, Run
from imgclf.models.backbones import WeightsError
from imgclf.training.loop import ProgressCallback, train

# The tutorial's two experiments: the small CNN from scratch, then a frozen ImageNet VGG16 with a dropout head.
EXPERIMENTS = {
    "cnn": {
        "model": "seed-cnn",
        "augment": "seed",
        "optimizer": "adam",
        "lr": 1e-3,
        "epochs": 30,
        "steps_per_epoch": 30,
        "batch_size": 32,
    },
    "vgg16": {
        "model": "seed-vgg16",
        "augment": "seed-vgg16",
        "optimizer": "rmsprop",
        "lr": 1e-4,
        "epochs": 30,
        "steps_per_epoch": 30,
        "batch_size": 32,
    },
}
PHOTOS_PER_CLASS = 3


@dataclass
class DemoResult:
    """One experiment's trained run, its predictions on photos it did not train on, and its wall time."""

    experiment: str
    run: Run
    predictions: list[Prediction]
    seconds: float


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
    experiment: str = "cnn",
    progress: ProgressCallback | None = None,
    seed: int = 0,
    epochs: int | None = None,
    vgg16_weights: str | None = None,
) -> list[DemoResult]:
    """Train the tutorial's experiment `cnn`, `vgg16` or `both` on `data` (default: the shipped photos),
    and predict a handful of photos none of them trained on.

    `epochs` shortens the experiments; `vgg16_weights` is a local VGG16 state dict for experiment 2.
    """
    data = Path(data) if data is not None else shipped_data()
    for split in ("training_set", "val_set"):
        if not (data / split).is_dir():
            raise DatasetError(
                f"{data} has no {split}/ folder. Received: --data={data}. The demo expects "
                f"{data}/training_set/<class>/ and {data}/val_set/<class>/."
            )
    names = list(EXPERIMENTS) if experiment == "both" else [experiment]
    if any(name not in EXPERIMENTS for name in names):
        raise ImgclfError(f"Unknown experiment. Received: --experiment={experiment}. Choose cnn, vgg16 or both.")
    if "vgg16" in names and vgg16_weights is not None and not Path(vgg16_weights).is_file():
        raise WeightsError(f"Weights file {vgg16_weights} does not exist. Received: --vgg16-weights={vgg16_weights}")
    photos = unseen_photos(data)
    results = []
    for name in names:
        run_out = None if out is None else Path(out) / name if len(names) > 1 else Path(out)
        started = time.perf_counter()
        options = {**EXPERIMENTS[name], "seed": seed, "epochs": epochs or EXPERIMENTS[name]["epochs"]}
        if name == "vgg16" and vgg16_weights is not None:
            options["weights"] = vgg16_weights
        try:
            run = train(
                data / "training_set",
                val=str(data / "val_set"),
                out=run_out and str(run_out),
                progress=progress,
                **options,
            )
        except WeightsError as error:  # name the demo's own option for the weights file
            raise WeightsError(str(error).replace("--weights", "--vgg16-weights")) from None
        results.append(DemoResult(name, run, run.predict(photos), time.perf_counter() - started))
    return results
