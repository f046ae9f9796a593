"""Exercise the CUDA path on a machine with a GPU: training in fp32, bf16 and fp16, streaming through pinned
memory, prediction on the GPU against the CPU, and DDP over nccl when there are two GPUs or more.

    .venv/bin/python bench/gpu_check.py
    .venv/bin/python bench/gpu_check.py --data ../shared/datasets/cars-planes --epochs 3

Each check prints one row (what, result, seconds) and the script exits 1 if any failed. On a machine without
CUDA it says so and exits 2: CI and CPU-only machines never run it. The numbers are measurements of this
machine's GPU, to be read next to `bench/run_all.py`'s CPU table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import add_data_option

import imgclf
from imgclf.data.folders import index_folder, list_images
from imgclf.data.loading import BatchSource
from imgclf.models import get_spec

SEED_CNN = {"model": "seed-cnn", "augment": "seed", "steps_per_epoch": 30, "batch_size": 32, "device": "cuda"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training check")
    return parser.parse_args()


def train(data: Path, out: Path, **options) -> imgclf.Run:
    return imgclf.train(data / "training_set", val=str(data / "val_set"), out=str(out), **options)


def seconds_per_epoch(run: imgclf.Run) -> float:
    seconds = [record["seconds"] for record in run.history]
    return sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else seconds[0]


def check_precision(data: Path, scratch: Path, epochs: int, precision: str) -> str:
    """seed-cnn on the GPU in one precision: finite losses and a usable model."""
    torch.cuda.reset_peak_memory_stats()
    run = train(data, scratch / f"cnn-{precision}", epochs=epochs, precision=precision, **SEED_CNN)
    losses = torch.tensor([record["loss"] for record in run.history])
    assert torch.isfinite(losses).all(), f"non-finite training loss in {precision}: {losses.tolist()}"
    peak = torch.cuda.max_memory_allocated() / 2**20
    return (
        f"{seconds_per_epoch(run):.3f} s/epoch, val_accuracy {run.history[-1]['val_accuracy']:.3f}, "
        f"GPU peak {peak:.0f} MB"
    )


def check_pinned_streaming(data: Path, scratch: Path, epochs: int) -> str:
    """Streaming (`--cache-mem 0`) through DataLoader workers: batches arrive in pinned memory."""
    preprocessing = get_spec("seed-cnn").preprocessing
    source = BatchSource(index_folder(data / "val_set"), preprocessing, False, 2, pin_memory=True)
    images, _ = next(iter(source.batches([[0, 1, 2, 3]])))
    assert images.is_pinned(), "a streamed batch for the GPU is not in pinned memory"
    run = train(data, scratch / "cnn-streaming", epochs=epochs, cache_mem_mb=0, workers=2, **SEED_CNN)
    return f"pinned batches; streamed {seconds_per_epoch(run):.3f} s/epoch"


def check_prediction_parity(data: Path, scratch: Path) -> str:
    """The same run predicts the same on the GPU as on the CPU (fp32)."""
    run = train(data, scratch / "cnn-parity", epochs=1, precision="fp32", **SEED_CNN)
    photos = list_images([data / "val_set"])
    on_gpu = imgclf.load(run.run_dir, device="cuda").predict(photos)
    on_cpu = imgclf.load(run.run_dir, device="cpu").predict(photos)
    worst = max(abs(a.probability - b.probability) for a, b in zip(on_gpu, on_cpu))
    assert [p.label for p in on_gpu] == [p.label for p in on_cpu], "labels differ between GPU and CPU"
    assert worst < 1e-3, f"probabilities differ by {worst:.2e} between GPU and CPU"
    return f"{len(photos)} photos, same labels, largest probability difference {worst:.1e}"


def check_lite0(data: Path, scratch: Path, epochs: int) -> str:
    """EfficientNet-Lite0: features extracted on the GPU, head, then the last 2 blocks fine-tuned (auto precision)."""
    run = train(data, scratch / "lite0", model="efficientnet_lite0", epochs=epochs, fine_tune="2", device="cuda")
    return f"val_accuracy {run.history[-1]['val_accuracy']:.3f}, fine-tune {run.history[-1]['seconds']:.2f} s/epoch"


def check_ddp(data: Path, scratch: Path) -> str:
    """Two processes, one per GPU, over nccl, through `imgclf train --nproc 2`."""
    if torch.cuda.device_count() < 2:
        return "skipped: one GPU (needs 2)"
    command = [
        sys.executable, "-m", "imgclf", "train", str(data / "training_set"), "--val", str(data / "val_set"),
        "--model", "seed-cnn", "--epochs", "2", "--device", "cuda", "--nproc", "2", "--out", str(scratch / "ddp"),
    ]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return f"2 processes trained {imgclf.load(scratch / 'ddp').history[-1]['epoch']:.0f} epochs"


def run_check(name: str, check: Callable[[], str]) -> bool:
    started = time.perf_counter()
    try:
        result, ok = check(), True
    except Exception as error:  # a failed check is reported and the others still run
        result, ok = f"FAILED: {type(error).__name__}: {error}", False
    print(f"{name:<28} {result}  ({time.perf_counter() - started:.1f} s)", flush=True)
    return ok


def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device here: nothing to check (run this on a machine with a GPU).", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} × {name}")
    precisions = ["fp32", "fp16", *(["bf16"] if torch.cuda.is_bf16_supported() else [])]
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        os.environ["IMGCLF_CACHE"] = str(scratch / "cache")
        checks = {f"seed-cnn {p}": lambda p=p: check_precision(args.data, scratch, args.epochs, p) for p in precisions}
        checks["streaming, pinned memory"] = lambda: check_pinned_streaming(args.data, scratch, args.epochs)
        checks["predict GPU vs CPU"] = lambda: check_prediction_parity(args.data, scratch)
        checks["lite0 head + fine-tune"] = lambda: check_lite0(args.data, scratch, args.epochs)
        checks["DDP nccl"] = lambda: check_ddp(args.data, scratch)
        results = [run_check(name, check) for name, check in checks.items()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
