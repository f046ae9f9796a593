"""Prediction speed per engine: EfficientNet-Lite0 at 224, end to end from JPEG files and for the model alone.

    .venv/bin/python bench/predict.py
    .venv/bin/python bench/predict.py --copies 4 --batch-sizes 8 32 --engines torch onnx openvino

A Lite0 run is trained for one epoch on the tutorial's photos (the weights do not change the timing), then
`imgclf export` makes its ONNX file. "End to end" is `Run.predict_iter` over the photos of `--data` repeated
`--copies` times, JPEG decode and resize included (the next batch is decoded while the engine runs); the
engine's load and parity check are not timed. "Model alone" runs the engine on one decoded batch repeatedly.
"Decode alone" is the decoding of every photo on all cores with no model. Target (issue 5): ≥ 150 images/s
end to end on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import add_data_option

import imgclf
from imgclf.data.folders import list_images
from imgclf.data.images import load_tensor
from imgclf.deploy.engines import installed_engines
from imgclf.deploy.export import export_onnx

MODEL_ALONE_SECONDS = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--copies", type=int, default=3, help="how many times every photo is predicted")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--engines", nargs="+", default=installed_engines())
    return parser.parse_args()


def lite0_run(data: Path, folder: Path) -> Path:
    """A one-epoch EfficientNet-Lite0 run on `data`, exported to ONNX inside its run directory."""
    run = imgclf.train(data / "training_set", val=str(data / "val_set"), epochs=1, out=str(folder / "lite0"))
    export_onnx(run)
    return run.run_dir


def images_per_second(count: int, seconds: float) -> float:
    return count / seconds


def decode_alone(files: list[str], preprocessing) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda path: load_tensor(path, preprocessing), files))
    return images_per_second(len(files), time.perf_counter() - start)


def model_alone(run: imgclf.Run, files: list[str], batch_size: int) -> float:
    batch = torch.stack([load_tensor(path, run.preprocessing) for path in files[:batch_size]])
    run.engine(batch)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < MODEL_ALONE_SECONDS:
        run.engine(batch)
        count += len(batch)
    return images_per_second(count, time.perf_counter() - start)


def end_to_end(run: imgclf.Run, files: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    predictions = list(run.predict_iter(files, batch_size))
    seconds = time.perf_counter() - start
    assert all(p.error is None for p in predictions), "every benchmark photo must be readable"
    return images_per_second(len(files), seconds)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["IMGCLF_CACHE"] = str(Path(folder) / "cache")
        run_dir = lite0_run(args.data, Path(folder))
        photos = list_images([args.data / "training_set", args.data / "val_set"])
        files = photos * args.copies
        print(
            f"{len(files)} predictions of {len(photos)} JPEG photos, {os.cpu_count()} cores, torch {torch.__version__}"
        )
        print("| engine | precision | batch | end to end img/s | model alone img/s |")
        print("|---|---|---|---|---|")
        preprocessing = None
        for engine in args.engines:
            run = imgclf.load(run_dir, engine=engine)
            preprocessing = run.preprocessing
            for batch_size in args.batch_sizes:
                e2e = end_to_end(run, files, batch_size)
                alone = model_alone(run, photos, batch_size)
                print(f"| {engine} | {run.engine.precision} | {batch_size} | {e2e:.1f} | {alone:.1f} |")
        decoded = decode_alone(files, preprocessing)
        print(f"Decode alone (JPEG → {preprocessing.image_size}², all cores): {decoded:.1f} img/s")


if __name__ == "__main__":
    main()
