"""Today's frozen default against `--preset balanced` and `--preset best --time-limit`: validation accuracy and
wall time on trashnet (`--val-split 0.2`), flowers12 and cars-planes, each run a fresh `imgclf train` process with
a fresh, empty cache (`IMGCLF_CACHE`), so feature extraction and decoding are always measured.

    .venv/bin/python bench/recipes.py
    .venv/bin/python bench/recipes.py --datasets flowers12 --best-limit 2m
    .venv/bin/python bench/recipes.py --datasets trashnet flowers12 --recipes default balanced
    .venv/bin/python bench/recipes.py --fastai-python /work/venv-fastai/bin/python --best-limit quarter-of-fastai

With `--fastai-python` (the python of a venv holding fastai: see bench/fastai_baseline.py for its set-up), each
data set starts with fastai's `vision_learner` + `fine_tune(3)` on the same Lite0 weights and the same split, and
`--best-limit quarter-of-fastai` gives `--preset best` a quarter of the seconds fastai trained for (imports left
out, so the limit is the stricter one): issue 17's comparison, in one run.

"trash-metal" is a 2-class set where the frozen default scores about 96%: trashnet's trash and metal folders
(linked into a temporary folder), `--val-split 0.2`: 438 training and 109 validation images. It was chosen by
the default's accuracy alone, never by the presets': pairs of trashnet's smallest class (trash) with another
were to be tried in turn (small sets, as fastai's time grows with the images), taking the first whose default
scored within a point of 96%, and the first, trash/metal, scored 96.3% (105 of 109; `imgclf train DIR
--val-split 0.2 --seed 0`). flowers12's pairs hold
40 validation images, too few to tell 96% from 97.5%.

Accuracy is `metrics.json`'s, on the validation images after training (the presets also chose on them, so their
figure is optimistic by as much as choosing among a few candidates can be). Each line reports the machine's
1-minute load average (`os.getloadavg`) before and after its run: the machine is shared, and a figure measured
beside other work is slower than the machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT

FASTAI_BASELINE = Path(__file__).with_name("fastai_baseline.py")
QUARTER_OF_FASTAI = "quarter-of-fastai"
TWO_CLASSES = ("trash", "metal")

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
DATA = {
    "trashnet": [str(DATASETS / "trashnet"), "--val-split", "0.2"],
    "flowers12": [str(DATASETS / "flowers12" / "train"), "--val", str(DATASETS / "flowers12" / "val")],
    "cars-planes": [
        str(DATASETS / "cars-planes" / "training_set"),
        "--val",
        str(DATASETS / "cars-planes" / "val_set"),
    ],
}


def link_two_classes(parent: Path) -> list[str]:
    """The 2-class set's data options: a folder under `parent` linking trashnet's `TWO_CLASSES` folders."""
    folder = parent / "-".join(TWO_CLASSES)
    folder.mkdir()
    for name in TWO_CLASSES:
        (folder / name).symlink_to(DATASETS / "trashnet" / name, target_is_directory=True)
    return [str(folder), "--val-split", "0.2"]


def recipes(best_limit: str) -> dict[str, list[str]]:
    return {
        "default": ["--seed", "0"],
        "balanced": ["--seed", "0", "--preset", "balanced"],
        f"best {best_limit}": ["--seed", "0", "--preset", "best", "--time-limit", best_limit],
    }


def measure(data: list[str], options: list[str], out: Path) -> dict:
    """One `imgclf train` in its own process and cache: wall seconds, validation accuracy, the recipe's choice."""
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "IMGCLF_CACHE": cache}
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        command = [sys.executable, "-m", "imgclf", "train", *data, *options, "--out", str(out)]
        subprocess.run(command, check=True, env=environment, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return {
        "seconds": round(seconds, 1),
        "accuracy": metrics["accuracy"],
        "model": config["model"] + fine_tuning_note(config.get("recipe") or {}),
        "load": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }


def fine_tuning_note(recipe: dict) -> str:
    """`best`'s fine-tuning, as the run's recipe records it: kept or not, and each epoch's held-out accuracy."""
    fine_tuning = recipe.get("fine_tuning")
    if not fine_tuning:
        return ""
    epochs = ", ".join(f"{epoch['accuracy']:.4f}" for epoch in fine_tuning.get("epochs", []))
    verdict = "kept" if fine_tuning.get("kept") else "not kept"
    return f"; fine-tuning {fine_tuning.get('model')} {verdict} (from {fine_tuning.get('baseline_accuracy')}: {epochs})"


def measure_fastai(python: str, data: list[str]) -> dict:
    """fastai_baseline.py in `python`'s venv: its JSON (accuracy, seconds without imports) and the process's wall."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    finished = subprocess.run([python, str(FASTAI_BASELINE), *data], capture_output=True, text=True)
    if finished.returncode != 0:
        sys.stderr.write(finished.stderr[-3000:])
        raise SystemExit(f"fastai_baseline.py failed on {data[0]} (exit {finished.returncode}); its stderr is above.")
    result = json.loads(finished.stdout.splitlines()[-1])
    return {
        **result,
        "wall": round(time.perf_counter() - started, 1),
        "load": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }


def print_row(dataset: str, recipe: str, accuracy: float, seconds: float, load: tuple, model: str) -> None:
    print(
        f"{dataset:12} {recipe:10} {accuracy:8.4f} {seconds:7.1f}  {load[0]:5.2f} / {load[1]:5.2f}             {model}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    two_classes = "-".join(TWO_CLASSES)
    parser.add_argument("--datasets", nargs="+", choices=sorted([*DATA, two_classes]), default=list(DATA))
    parser.add_argument(
        "--best-limit",
        default="3m",
        help=f"--time-limit of --preset best (default %(default)s), or {QUARTER_OF_FASTAI}: a quarter of the "
        "seconds fastai trained for on the same data, in this run (needs --fastai-python)",
    )
    parser.add_argument(
        "--fastai-python",
        help="the python of a venv holding fastai (see bench/fastai_baseline.py): run fastai's vision_learner + "
        "fine_tune(3) first on each data set",
    )
    parser.add_argument("--recipes", nargs="+", choices=["default", "balanced", "best"], help="(default: all)")
    args = parser.parse_args()
    if args.best_limit == QUARTER_OF_FASTAI and not args.fastai_python:
        parser.error(f"--best-limit {QUARTER_OF_FASTAI} needs --fastai-python")
    print(f"{'data':12} {'recipe':10} {'val acc':>8} {'wall s':>7}  load 1-min before/after  model", flush=True)
    with tempfile.TemporaryDirectory() as runs:
        data = {**DATA, two_classes: link_two_classes(Path(runs)) if two_classes in args.datasets else []}
        for dataset in args.datasets:
            best_limit = args.best_limit
            if args.fastai_python:
                fastai = measure_fastai(args.fastai_python, data[dataset])
                print_row(dataset, "fastai", fastai["accuracy"], fastai["wall"], fastai["load"], "efficientnet_lite0")
                print(f"{'':12} fastai trained for {fastai['seconds']} s (imports left out)", flush=True)
                if best_limit == QUARTER_OF_FASTAI:
                    best_limit = f"{round(fastai['seconds'] / 4)}s"
            for name, options in recipes(best_limit).items():
                if args.recipes and name.split()[0] not in args.recipes:
                    continue
                result = measure(data[dataset], options, Path(runs) / f"{dataset}-{name.split()[0]}")
                print_row(dataset, name, result["accuracy"], result["seconds"], result["load"], result["model"])


if __name__ == "__main__":
    main()
