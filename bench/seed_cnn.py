"""Time the tutorial's seed-cnn experiment (30 epochs × 30 steps × 32 images, `seed` augmentation) per seed.

    .venv/bin/python bench/seed_cnn.py
    .venv/bin/python bench/seed_cnn.py --seeds 0 1 2 --epochs 30 --data ../shared/datasets/cars-planes

Seconds per epoch are the `seconds` column of each run's history (training steps plus the validation pass,
not the checkpoint writes); "wall" is the whole `imgclf.train` call, decoding and saving included. Peak RSS
is the process's high-water mark so far, so it only grows from one seed to the next.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import add_data_option

import imgclf

STEPS_PER_EPOCH = 30
BATCH_SIZE = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, default=30)
    return parser.parse_args()


def run_seed(data: Path, seed: int, epochs: int) -> dict[str, float]:
    """Train one seed into a temporary folder and return its timings and accuracies."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = imgclf.train(
            data / "training_set",
            val=str(data / "val_set"),
            model="seed-cnn",
            augment="seed",
            epochs=epochs,
            steps_per_epoch=STEPS_PER_EPOCH,
            batch_size=BATCH_SIZE,
            seed=seed,
            out=str(Path(out) / "run"),
        )
        wall = time.perf_counter() - started
        history = run.history
    seconds = [record["seconds"] for record in history]
    steady = statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {
        "seed": seed,
        "s/epoch (2..N)": steady,
        "s/epoch (all)": statistics.mean(seconds),
        "train img/s": STEPS_PER_EPOCH * BATCH_SIZE / steady,
        "wall s": wall,
        "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final val acc": history[-1]["val_accuracy"],
        "best val acc": max(record["val_accuracy"] for record in history),
    }


def main() -> None:
    args = parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {args.data}", file=sys.stderr)
    rows = [run_seed(args.data, seed, args.epochs) for seed in args.seeds]
    columns = list(rows[0])
    mean = {"seed": "mean", **{c: statistics.mean(row[c] for row in rows) for c in columns[1:]}}
    print(" | ".join(f"{c:>14}" for c in columns))
    for row in [*rows, mean]:
        print(" | ".join(f"{v:>14}" if isinstance(v, str | int) else f"{v:>14.3f}" for v in row.values()))


if __name__ == "__main__":
    main()
