"""Predicting very large folders: images a second and peak memory of `imgclf predict` as the folder grows.

    .venv/bin/python bench/predict_scale.py                          # 10,000 and 100,000 JPEGs
    .venv/bin/python bench/predict_scale.py --counts 10000 30000 --engine torch --scratch /tmp/predict-scale
    .venv/bin/python bench/predict_scale.py --before /tmp/imgclf-main/src   # another version, same folders

A seed-cnn run (64 px) is trained for a moment on the tutorial's photos (the weights do not change the timing),
its engine loaded once so that an ONNX export is not timed. For each count, that many 64 px JPEGs are written
(16 smooth encoded images copied over, in 10 sub-folders), then `imgclf predict RUN FOLDER --format csv --output
FILE` runs in a child process: its wall time, CPU time and peak RSS (its own `ru_maxrss`, from `os.wait4`). The
start-up (importing PyTorch, loading the run) is measured on a folder of one batch and taken off for the rate and
the CPU time an image. "Decode alone" is the decoding of the first 5,000 files on all cores with no model, a batch
of files a task as `imgclf predict`'s workers take them: the speed to reach. `--before SRC` times another version's
`src/` folder on the same folders just before this one, so that a before/after shares the machine's load. Targets:
the decoder's speed end to end, peak RSS under 2 GB and flat from 10k to 100k. The images are deleted afterwards. On
a shared machine the CPU time an image is the steadier figure: the wall time follows the other jobs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    parser.add_argument("--before", type=Path, help="another version's src/ folder, timed first on the same folders")
    return parser.parse_args()


def seed_cnn_run(data: Path, scratch: Path, engine: str) -> Path:
    """A seed-cnn run trained for two steps, with `engine` loaded once (an ONNX export is made then, not timed)."""
    run = imgclf.train(
        data / "training_set", model="seed-cnn", epochs=1, steps_per_epoch=2, out=str(scratch / "seed-cnn")
    )
    imgclf.load(run.run_dir, engine=engine)
    return run.run_dir


@dataclass
class Timing:
    """What one `imgclf predict` child cost: wall and CPU seconds, peak RSS in MB."""

    seconds: float
    cpu_seconds: float
    peak_mb: float


def predict_in_child(run_dir: Path, folder: Path, output: Path, args: argparse.Namespace, src: Path) -> Timing:
    """The cost of `imgclf predict` over `folder` into the CSV `output`, in a child process importing `src`."""
    command = [sys.executable, "-m", "imgclf", "predict", str(run_dir), str(folder), "--format", "csv"]
    command += ["--output", str(output), "--engine", args.engine, "--batch-size", str(args.batch_size)]
    environment = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=environment)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imgclf predict failed: PYTHONPATH={src} {' '.join(command)}")
    return Timing(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def decode_alone(files: list[str], preprocessing, batch_size: int) -> tuple[float, float]:
    """(images a second, CPU µs an image) decoding `files` on every core, without a model: a batch a task, as
    `imgclf predict`'s workers take them."""
    batches = [files[start : start + batch_size] for start in range(0, len(files), batch_size)]
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda batch: [load_tensor(path, preprocessing) for path in batch], batches))
    return len(files) / (time.perf_counter() - started), 1e6 * (_cpu_seconds() - cpu_started) / len(files)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def versions(args: argparse.Namespace) -> dict[str, Path]:
    """The `src/` folders to time, by name: `--before` first, then this checkout's."""
    this = {"this": Path(imgclf.__file__).resolve().parents[1]}
    return {"before": args.before.resolve(), **this} if args.before else this


def time_versions(run_dir: Path, scratch: Path, count: int, args: argparse.Namespace, starts: dict) -> None:
    """One table row per version for a folder of `count` JPEGs, with decoding alone on the same files."""
    folder = write_tiny_images(scratch / f"photos-{count}", count, size=64, fmt="JPEG")
    decoding, decode_cpu = decode_alone(
        list_images([folder])[:DECODE_SAMPLE], imgclf.load(run_dir).preprocessing, args.batch_size
    )
    for name, src in versions(args).items():
        load = os.getloadavg()[0]
        output = scratch / f"predictions-{count}.csv"
        timing = predict_in_child(run_dir, folder, output, args, src)
        rows = sum(1 for _ in output.open()) - 1
        if rows != count:
            raise SystemExit(f"{output} has {rows} rows for {count} images")
        start = starts[name]
        rate = count / max(timing.seconds - start.seconds, 1e-9)
        cpu = 1e6 * (timing.cpu_seconds - start.cpu_seconds) / count
        print(
            f"| {name} | {count:,} | {timing.seconds:.1f} | {rate:,.0f} | {cpu:,.0f} | {timing.peak_mb:,.0f} "
            f"| {decoding:,.0f} | {decode_cpu:,.0f} | {load:.1f} |",
            flush=True,
        )
        output.unlink()
    shutil.rmtree(folder)


def main() -> None:
    args = parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="predict-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = seed_cnn_run(args.data, scratch, args.engine)
    one_batch = write_tiny_images(scratch / "one-batch", args.batch_size, size=64, fmt="JPEG")
    starts = {}
    for name, src in versions(args).items():
        starts[name] = predict_in_child(run_dir, one_batch, scratch / "one-batch.csv", args, src)
        print(
            f"{name}: start-up (import, load, one batch of {args.batch_size}): {starts[name].seconds:.1f} s, "
            f"peak RSS {starts[name].peak_mb:,.0f} MB"
        )
    print(
        "| version | images | wall s | img/s (start-up off) | CPU µs/img | peak RSS MB | decode alone img/s "
        "| decode CPU µs/img | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in args.counts:
        time_versions(run_dir, scratch, count, args, starts)
    if args.scratch is None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
