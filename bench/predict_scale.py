"""Predicting very large folders: images a second and peak memory of `imgclf predict` as the folder grows.

    .venv/bin/python bench/predict_scale.py                          # 10,000 and 100,000 JPEGs
    .venv/bin/python bench/predict_scale.py --counts 10000 30000 --engine torch --scratch /tmp/predict-scale

A seed-cnn run (64 px) is trained for a moment on the tutorial's photos (the weights do not change the timing),
its engine loaded once so that an ONNX export is not timed. For each count, that many 64 px JPEGs are written
(16 smooth encoded images copied over, in 10 sub-folders), then `imgclf predict RUN FOLDER --format csv --output
FILE` runs in a child process: its wall time and peak RSS (its own `ru_maxrss`, from `os.wait4`). The start-up
(importing PyTorch, loading the run) is measured on a folder of one batch and taken off for the rate. "Decode
alone" is the decoding of the first 5,000 files on all cores with no model: the speed to reach. Targets: the
decoder's speed end to end, peak RSS under 2 GB and flat from 10k to 100k. The images are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import add_data_option
from run_all import write_tiny_images

import imgclf
from imgclf.data.folders import list_images
from imgclf.data.images import load_tensor

DECODE_SAMPLE = 5000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000], help="images per folder")
    parser.add_argument("--engine", default="auto", help="--engine of imgclf predict (default auto)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scratch", type=Path, help="where to write the images (default: a temporary folder)")
    return parser.parse_args()


def seed_cnn_run(data: Path, scratch: Path, engine: str) -> Path:
    """A seed-cnn run trained for two steps, with `engine` loaded once (an ONNX export is made then, not timed)."""
    run = imgclf.train(
        data / "training_set", model="seed-cnn", epochs=1, steps_per_epoch=2, out=str(scratch / "seed-cnn")
    )
    imgclf.load(run.run_dir, engine=engine)
    return run.run_dir


def predict_in_child(run_dir: Path, folder: Path, output: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `imgclf predict` over `folder` into the CSV `output`, in a child process."""
    command = [sys.executable, "-m", "imgclf", "predict", str(run_dir), str(folder), "--format", "csv"]
    command += ["--output", str(output), "--engine", args.engine, "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imgclf predict failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024


def decode_alone(files: list[str], preprocessing) -> float:
    """Images a second decoding `files` on every core, without a model."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda path: load_tensor(path, preprocessing), files))
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="predict-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = seed_cnn_run(args.data, scratch, args.engine)
    preprocessing = imgclf.load(run_dir, engine="torch").preprocessing
    one_batch = write_tiny_images(scratch / "one-batch", args.batch_size, size=64, fmt="JPEG")
    start_up, start_up_mb = predict_in_child(run_dir, one_batch, scratch / "one-batch.csv", args)
    print(f"start-up (import, load, one batch of {args.batch_size}): {start_up:.1f} s, peak RSS {start_up_mb:,.0f} MB")
    print("| images | wall s | img/s (start-up off) | peak RSS MB | decode alone img/s |")
    print("|---:|---:|---:|---:|---:|")
    for count in args.counts:
        folder = write_tiny_images(scratch / f"photos-{count}", count, size=64, fmt="JPEG")
        output = scratch / f"predictions-{count}.csv"
        seconds, peak_mb = predict_in_child(run_dir, folder, output, args)
        rows = sum(1 for _ in output.open()) - 1
        if rows != count:
            raise SystemExit(f"{output} has {rows} rows for {count} images")
        decoding = decode_alone(list_images([folder])[:DECODE_SAMPLE], preprocessing)
        rate = count / max(seconds - start_up, 1e-9)
        print(f"| {count:,} | {seconds:.1f} | {rate:,.0f} | {peak_mb:,.0f} | {decoding:,.0f} |", flush=True)
        shutil.rmtree(folder)
        output.unlink()
    if args.scratch is None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
