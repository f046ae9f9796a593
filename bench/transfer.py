"""Time the transfer-learning paths on this machine: seed-vgg16 with augmentation and with the feature cache,
EfficientNet-Lite0 feature extraction from JPEG files, and Lite0's accuracy on the tutorial data per seed.

    .venv/bin/python bench/transfer.py
    .venv/bin/python bench/transfer.py --vgg-epochs 3 --seeds 0 1 2 --vgg-weights vgg16.safetensors
    .venv/bin/python bench/transfer.py --skip-quality --data ../shared/datasets/cars-planes

ImageNet VGG16 weights cannot be downloaded offline, so unless `--vgg-weights FILE` is given the VGG16 runs
start from a randomly initialised `torchvision.models.vgg16(weights=None)` saved as safetensors: the work per
step, and so the timing, does not depend on the values (their accuracy does, and is not reported).
Seconds per epoch are the `seconds` column of each run's history (training steps plus the validation pass, not
the checkpoint writes); "wall" is the whole `imgclf.train` call: weights hashing and loading, feature
extraction, checkpoints and the final load of the run. Every feature cache (`IMGCLF_CACHE`) is a fresh
temporary folder, so extraction is always measured; the Lite0 seeds share one, so only the first extracts.
Peak RSS is the process's high-water mark at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import add_data_option
from torch import nn

import imgclf
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor, normalize
from imgclf.devices import CPU, resolve_precision
from imgclf.models import BuildOptions, get_spec
from imgclf.models.heads import fixed_prefix_length
from imgclf.training.features import FeatureCache, extract_features

STEPS_PER_EPOCH = 30
BATCH_SIZE = 32
CACHED_EPOCHS = 30
MODEL_ONLY_REPEATS = 5
VGG_OPTIONS = {
    "model": "seed-vgg16",
    "optimizer": "rmsprop",
    "lr": 1e-4,
    "steps_per_epoch": STEPS_PER_EPOCH,
    "batch_size": BATCH_SIZE,
}

Row = tuple[str, str, str]
"""(measurement, value, target)"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--vgg-epochs", type=int, default=3, help="epochs of the augmented seed-vgg16 run")
    parser.add_argument("--vgg-weights", type=Path, help="VGG16 ImageNet weights (default: random, for timing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the Lite0 quality runs")
    parser.add_argument("--skip-quality", action="store_true", help="skip the Lite0 accuracy runs")
    return parser.parse_args()


def random_vgg16_weights(folder: Path) -> Path:
    """A randomly initialised torchvision VGG16 state dict saved as safetensors in `folder`."""
    import torchvision
    from safetensors.torch import save_file

    path = folder / "vgg16-random.safetensors"
    state = torchvision.models.vgg16(weights=None).state_dict()
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))
    return path


def timed_train(data: Path, cache: Path, **options) -> tuple[list[dict[str, float]], float]:
    """Train into a temporary folder with `IMGCLF_CACHE=cache`; return the history and the call's wall seconds."""
    os.environ["IMGCLF_CACHE"] = str(cache)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = imgclf.train(data / "training_set", val=str(data / "val_set"), out=str(Path(out) / "run"), **options)
        wall = time.perf_counter() - started
        return run.history, wall


def vgg_augmented(data: Path, weights: Path, epochs: int, scratch: Path) -> list[Row]:
    """seed-vgg16 with the tutorial's augmentation: the backbone runs on every batch of every epoch."""
    history, wall = timed_train(
        data, scratch / "cache-vgg-augmented", augment="seed-vgg16", epochs=epochs, weights=str(weights), **VGG_OPTIONS
    )
    seconds = [record["seconds"] for record in history]
    steady = statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]
    which = f"epochs 2..{len(seconds)}" if len(seconds) > 1 else "epoch 1"
    return [
        (f"seed-vgg16 augmented: s/epoch ({which})", f"{steady:.2f}", "<= 6"),
        ("seed-vgg16 augmented: s/epoch (each)", " ".join(f"{s:.2f}" for s in seconds), ""),
        ("seed-vgg16 augmented: train img/s", f"{STEPS_PER_EPOCH * BATCH_SIZE / steady:.1f}", ""),
        (f"seed-vgg16 augmented: wall s ({epochs} epochs)", f"{wall:.1f}", ""),
    ]


def vgg_cached(data: Path, weights: Path, scratch: Path) -> list[Row]:
    """seed-vgg16 without augmentation: features are extracted once into an empty cache, then the head trains."""
    history, wall = timed_train(
        data, scratch / "cache-vgg-features", augment="none", epochs=CACHED_EPOCHS, weights=str(weights), **VGG_OPTIONS
    )
    seconds = [record["seconds"] for record in history]
    return [
        (f"seed-vgg16 feature cache: wall s ({CACHED_EPOCHS} epochs, extraction incl.)", f"{wall:.1f}", "<= 15"),
        ("seed-vgg16 feature cache: s/epoch (mean, max)", f"{statistics.mean(seconds):.3f}, {max(seconds):.3f}", ""),
        ("seed-vgg16 feature cache: sum of epoch s", f"{sum(seconds):.2f}", ""),
    ]


def lite0_extractor() -> tuple[nn.Module, imgclf.Preprocessing]:
    """Lite0's pretrained backbone and the parameter-free start of its head, laid out as `imgclf.train` does."""
    model = imgclf.create_model("efficientnet_lite0", 2, options=BuildOptions(pretrained=True))
    model = model.to(memory_format=torch.channels_last)  # as imgclf.train does on a CPU
    extractor = nn.Sequential(model.backbone, *model.head[: fixed_prefix_length(model.head)]).eval()
    return extractor, get_spec("efficientnet_lite0").preprocessing


def lite0_extraction(data: Path, scratch: Path) -> list[Row]:
    """Images/s of decode + resize + model into an empty cache, and of the model alone on a decoded batch."""
    extractor, preprocessing = lite0_extractor()
    files = [*index_folder(data / "training_set").files, *index_folder(data / "val_set").files]
    started = time.perf_counter()
    precision = resolve_precision("auto", CPU)  # as `imgclf train` extracts: bf16 where the CPU has it
    _, _, skipped, computed = extract_features(
        extractor, files, preprocessing, FeatureCache(scratch / "cache-lite0-extraction"), autocast_dtype=precision
    )
    from_files = len(files) / (time.perf_counter() - started)

    batch = normalize(torch.stack([load_tensor(path, preprocessing) for path in files[:BATCH_SIZE]]), preprocessing)
    with torch.inference_mode():
        extractor(batch)  # warm-up
        durations = []
        for _ in range(MODEL_ONLY_REPEATS):
            started = time.perf_counter()
            extractor(batch)
            durations.append(time.perf_counter() - started)
    model_only = BATCH_SIZE / statistics.median(durations)
    return [
        (
            f"Lite0 extraction from JPEG: img/s ({computed} computed, {len(skipped)} skipped)",
            f"{from_files:.1f}",
            ">= 120",
        ),
        (
            f"Lite0 model only: img/s (batch {BATCH_SIZE} at 224, median of {MODEL_ONLY_REPEATS})",
            f"{model_only:.1f}",
            "",
        ),
        ("Lite0 share of extraction time outside the model", f"{1 - from_files / model_only:.0%}", ""),
    ]


def lite0_quality(data: Path, seeds: list[int], scratch: Path) -> list[Row]:
    """The defaults (Lite0, frozen backbone, linear head, feature cache) per seed: val accuracy and seconds."""
    rows = []
    for seed in seeds:
        history, wall = timed_train(data, scratch / "cache-lite0-quality", seed=seed)
        val_count = len(index_folder(data / "val_set").files)
        final = round(history[-1]["val_accuracy"] * val_count)
        best = round(max(record["val_accuracy"] for record in history) * val_count)
        rows.append(
            (
                f"Lite0 defaults seed {seed}: final/best val correct, wall s ({len(history)} epochs)",
                f"{final}/{val_count}, {best}/{val_count}, {wall:.1f} s",
                f"{val_count}/{val_count}",
            )
        )
    return rows


def main() -> None:
    args = parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}, data {args.data}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        weights = args.vgg_weights or random_vgg16_weights(scratch)
        rows += vgg_augmented(args.data, weights, args.vgg_epochs, scratch)
        rows += vgg_cached(args.data, weights, scratch)
        rows += lite0_extraction(args.data, scratch)
        if not args.skip_quality:
            rows += lite0_quality(args.data, args.seeds, scratch)
    rows.append(("peak RSS MB", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", ""))
    # This benchmark keeps every core busy, so a 1-minute load average well above the core count means other
    # processes shared the CPU and the timings above are pessimistic.
    rows.append(("1-minute load average at the end", f"{os.getloadavg()[0]:.2f}", f"~{os.cpu_count()}"))

    source = args.vgg_weights or "random init (timing does not depend on the values)"
    print(f"VGG16 weights: {source}")
    widths = [max(len(row[i]) for row in [("measurement", "value", "target"), *rows]) for i in range(3)]
    print(" | ".join(title.ljust(width) for title, width in zip(("measurement", "value", "target"), widths)))
    print("-+-".join("-" * width for width in widths))
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
