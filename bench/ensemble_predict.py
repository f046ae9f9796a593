"""Predicting with an ensemble of two backbones against the single model: images a second, end to end from JPEG.

    .venv/bin/python bench/ensemble_predict.py --single RUN --ensemble RUN
    .venv/bin/python bench/ensemble_predict.py --train          # trains both on trashnet first (about 2 minutes)

With `--train`, the frozen default (`imgclf train trashnet --val-split 0.2 --seed 0`, EfficientNet-Lite0) and
`--preset balanced` (on trashnet: EfficientNet-Lite1 and Lite0 averaged, one ONNX graph) are trained into a
temporary folder. Both runs then predict the tutorial's photos (`--copies` times over) with the same engine,
alternating single and ensemble for `--rounds` rounds after one warm-up call each; the engine's export and
compile happen at load, before the timing. Issue 17's target: the ensemble at ≥ 0.45× the single model's img/s
(each photo is decoded once for both backbones, at the larger one's size).
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

from common import add_data_option

import imgclf
from imgclf.data.folders import list_images

TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--single", type=Path, help="a single-backbone run")
    parser.add_argument("--ensemble", type=Path, help="an ensemble run (--preset balanced or best)")
    parser.add_argument("--train", action="store_true", help="train both on trashnet first")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--copies", type=int, default=2, help="how many times every photo is predicted")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.train and not (args.single and args.ensemble):
        parser.error("give --single RUN and --ensemble RUN, or --train")
    return args


def train(out: Path, *options: str) -> Path:
    command = [sys.executable, "-m", "imgclf", "train", str(TRASHNET), "--val-split", "0.2", "--seed", "0"]
    subprocess.run([*command, *options, "--out", str(out)], check=True, capture_output=True)
    return out


def images_per_second(run: imgclf.Run, photos: list[str]) -> float:
    started = time.perf_counter()
    run.predict(photos)
    return len(photos) / (time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.train:
            args.single = train(Path(scratch) / "single")
            args.ensemble = train(Path(scratch) / "ensemble", "--preset", "balanced")
        runs = {
            name: imgclf.load(path, engine=args.engine)
            for name, path in (("single", args.single), ("ensemble", args.ensemble))
        }
        photos = [str(path) for path in list_images([args.data])] * args.copies
        for run in runs.values():
            run.predict(photos[:32])
        rates = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                rates[name].append(round(images_per_second(run, photos), 1))
        models = {name: run.config.train.model for name, run in runs.items()}
    best = {name: max(values) for name, values in rates.items()}
    print(
        json.dumps(
            {
                "models": models,
                "engine": {name: run.engine.name for name, run in runs.items()},
                "images": len(photos),
                "img_per_s": rates,
                "ratio_of_best": round(best["ensemble"] / best["single"], 3),
                "load": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
