"""Today's frozen default against `--preset balanced` and `--preset best --time-limit`: validation accuracy and
wall time on trashnet (`--val-split 0.2`), flowers12 and cars-planes, each run a fresh `imgclf train` process with
a fresh, empty cache (`IMGCLF_CACHE`), so feature extraction and decoding are always measured.

    .venv/bin/python bench/recipes.py
    .venv/bin/python bench/recipes.py --datasets flowers12 --best-limit 2m
    .venv/bin/python bench/recipes.py --datasets trashnet flowers12 --recipes default balanced

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
        "model": config["model"],
        "load": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATA), default=list(DATA))
    parser.add_argument("--best-limit", default="3m", help="--time-limit of --preset best (default %(default)s)")
    parser.add_argument("--recipes", nargs="+", choices=["default", "balanced", "best"], help="(default: all)")
    args = parser.parse_args()
    print(f"{'data':12} {'recipe':10} {'val acc':>8} {'wall s':>7}  load 1-min before/after  model", flush=True)
    with tempfile.TemporaryDirectory() as runs:
        for dataset in args.datasets:
            for name, options in recipes(args.best_limit).items():
                if args.recipes and name.split()[0] not in args.recipes:
                    continue
                result = measure(DATA[dataset], options, Path(runs) / f"{dataset}-{name.split()[0]}")
                print(
                    f"{dataset:12} {name:10} {result['accuracy']:8.4f} {result['seconds']:7.1f}  "
                    f"{result['load'][0]:5.2f} / {result['load'][1]:5.2f}             {result['model']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
