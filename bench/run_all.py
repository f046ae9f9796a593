"""imgclf's speed on this machine in one table; with `--compare-keras`, the tutorial's Keras code beside it.

    .venv/bin/python bench/run_all.py
    .venv/bin/python bench/run_all.py --compare-keras
    .venv/bin/python bench/run_all.py --quick --data ../shared/datasets/cars-planes

Each measurement runs in a fresh process (`--measure NAME` runs one and prints its JSON), so its peak RSS is
its own and nothing is warm from the one before: seed-cnn seconds per epoch (the tutorial's experiment 1,
augmented, 30 steps × 32), seed-vgg16 seconds per epoch with augmentation and the whole 30-epoch run on the
feature cache (extraction included, into an empty cache), EfficientNet-Lite0 prediction from JPEG files with
PyTorch, onnxruntime and OpenVINO, Lite0 feature extraction as training runs it (a first run, and one with
the backbone's OpenVINO export already made), training while streaming a generated folder from disk
(`--cache-mem 0`), indexing 100,000 generated files, and how fast `imgclf --help` answers (bench/cli_start.py).
VGG16 starts from random weights (the work per step does not depend on them).
`--compare-keras` installs tensorflow-cpu into `.venv-keras` (once) and runs the tutorial's two experiments in
the same run, for the same epochs; its ratios are Keras seconds over imgclf seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import imgclf
from imgclf.data.folders import index_folder, list_images
from imgclf.devices import CPU, resolve_precision
from imgclf.models.folding import check_batch
from imgclf.training.features import FeatureCache, extract_features
from imgclf.training.frozen import WORTH_EXPORTING, fastest_backbone

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cli_start import help_seconds  # noqa: E402
from common import add_data_option  # noqa: E402
from predict import end_to_end, lite0_run  # noqa: E402  (bench/ scripts are not a package)
from transfer import VGG_OPTIONS, lite0_extractor, random_vgg16_weights  # noqa: E402

STEPS_PER_EPOCH, BATCH_SIZE = 30, 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and smaller generated folders")
    parser.add_argument("--compare-keras", action="store_true", help="also run the tutorial's Keras code")
    parser.add_argument(
        "--measure",
        metavar="NAME",
        choices=MEASUREMENTS,
        help="run only this measurement, in this process, and print its figures and peak RSS as JSON; one of "
        + ", ".join(f"'{name}'" for name in MEASUREMENTS),
    )
    return parser.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady_seconds(history: list[dict]) -> float:
    """Mean seconds per epoch, leaving out the first (warm-up) when there are more."""
    seconds = [record["seconds"] for record in history]
    return statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]


def train(data: Path, scratch: Path, name: str, **options) -> tuple[imgclf.Run, float]:
    os.environ["IMGCLF_CACHE"] = str(scratch / f"cache-{name}")  # an empty cache: extraction is measured
    started = time.perf_counter()
    run = imgclf.train(data / "training_set", val=str(data / "val_set"), out=str(scratch / name), **options)
    return run, time.perf_counter() - started


def seed_cnn(data: Path, scratch: Path, epochs: int) -> dict:
    run, _ = train(
        data, scratch, "seed-cnn", model="seed-cnn", augment="seed", epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH, batch_size=BATCH_SIZE,
    )  # fmt: skip
    return {"seconds": steady_seconds(run.history), "val_accuracy": run.history[-1]["val_accuracy"]}


def vgg16_augmented(data: Path, scratch: Path, epochs: int) -> dict:
    weights = random_vgg16_weights(scratch)
    run, _ = train(data, scratch, "vgg", augment="seed-vgg16", epochs=epochs, weights=str(weights), **VGG_OPTIONS)
    return {"seconds": steady_seconds(run.history)}


def vgg16_cached(data: Path, scratch: Path, epochs: int) -> dict:
    weights = random_vgg16_weights(scratch)
    _, wall = train(data, scratch, "vgg-cached", augment="none", epochs=epochs, weights=str(weights), **VGG_OPTIONS)
    return {"seconds": wall}


def lite0_predict(data: Path, scratch: Path, engine: str) -> dict:
    os.environ["IMGCLF_CACHE"] = str(scratch / "cache")
    run = imgclf.load(lite0_run(data, scratch), engine=engine)
    photos = list_images([data / "training_set", data / "val_set"]) * 2
    end_to_end(run, photos[:32], 8)  # warm-up
    return {"images_per_second": end_to_end(run, photos, 8), "precision": run.engine.precision}


def lite0_extraction(data: Path, scratch: Path, copies: int = 1, exported: bool = False) -> dict:
    """Lite0 features of every photo (each `copies` times) into an empty cache, as `imgclf train` extracts them:
    decoding, and with enough images the backbone's export to OpenVINO, included. `exported`: with what an earlier
    run left in the cache already there, so OpenVINO runs whatever the number of photos."""
    extractor, preprocessing = lite0_extractor()
    files = list_images([data / "training_set", data / "val_set"]) * copies
    cache = FeatureCache(scratch / "features")
    if exported:  # what a run of `WORTH_EXPORTING` images or more leaves: the export, and OpenVINO's compilation
        check = check_batch(preprocessing.image_size)
        fastest_backbone(extractor, check, cache.folder / "backbone.onnx", fp32=False, images=WORTH_EXPORTING)
    started = time.perf_counter()
    extract_features(extractor, files, preprocessing, cache, autocast_dtype=resolve_precision("auto", CPU))
    return {"images_per_second": len(files) / (time.perf_counter() - started)}


def write_tiny_images(root: Path, count: int, classes: int = 10, size: int = 8, fmt: str = "PNG") -> Path:
    """`count` generated images in `classes` class folders: 16 encoded images, copied over (fast to write)."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(16):
        blocks = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        image = blocks.resize((size, size), Image.Resampling.BICUBIC)  # smooth, as photos are, not noise
        path = root / f"sample.{fmt.lower()}"
        root.mkdir(parents=True, exist_ok=True)
        image.save(path, fmt)
        encoded.append(path.read_bytes())
    path.unlink()
    for label in range(classes):
        (root / f"class{label}").mkdir()
    for i in range(count):
        (root / f"class{i % classes}" / f"{i:07d}.{fmt.lower()}").write_bytes(encoded[i % len(encoded)])
    return root


def index_files(scratch: Path, count: int) -> dict:
    root = write_tiny_images(scratch / "tiny", count)
    started = time.perf_counter()
    index = index_folder(root)
    seconds = time.perf_counter() - started
    assert len(index.files) == count
    return {"seconds": seconds}


def streaming(scratch: Path, count: int) -> dict:
    """seed-cnn for one pass over `count` generated 256 px JPEGs, streamed from disk with 2 workers."""
    root = write_tiny_images(scratch / "photos", count, classes=2, size=256, fmt="JPEG")
    started = time.perf_counter()
    imgclf.train(
        root, val_split=0.1, model="seed-cnn", epochs=1, cache_mem_mb=0, workers=2, out=str(scratch / "run"),
        decode_cache=False,
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started, "images": count}


def epoch_counts(args: argparse.Namespace) -> tuple[int, int]:
    """The epochs of the seed-cnn and the augmented seed-vgg16 runs (imgclf's and Keras's alike)."""
    return (3, 2) if args.quick else (5, 3)


MEASUREMENTS: dict[str, Callable[[argparse.Namespace, Path], dict]] = {
    "seed-cnn": lambda args, scratch: seed_cnn(args.data, scratch, epoch_counts(args)[0]),
    "seed-vgg16 augmented": lambda args, scratch: vgg16_augmented(args.data, scratch, epoch_counts(args)[1]),
    "seed-vgg16 cached": lambda args, scratch: vgg16_cached(args.data, scratch, 30),
    "lite0 predict torch": lambda args, scratch: lite0_predict(args.data, scratch, "torch"),
    "lite0 predict onnx": lambda args, scratch: lite0_predict(args.data, scratch, "onnx"),
    "lite0 predict openvino": lambda args, scratch: lite0_predict(args.data, scratch, "openvino"),
    "lite0 extraction": lambda args, scratch: lite0_extraction(args.data, scratch),
    "lite0 extraction ×5": lambda args, scratch: lite0_extraction(args.data, scratch, copies=5),
    "lite0 extraction, exported": lambda args, scratch: lite0_extraction(args.data, scratch, exported=True),
    "streaming": lambda args, scratch: streaming(scratch, 1_000 if args.quick else 5_000),
    "index 100k files": lambda args, scratch: index_files(scratch, 100_000),
    "imgclf --help": lambda args, scratch: help_seconds(),
}
"""Every measurement by name: a function of the options and a scratch folder, returning its figures."""


def measure_here(name: str, args: argparse.Namespace) -> None:
    """Run one measurement in this process and print its figures and peak RSS as one JSON line."""
    with tempfile.TemporaryDirectory() as folder:
        figures = MEASUREMENTS[name](args, Path(folder))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child process
    print(json.dumps({**figures, "peak_rss_mb": peak_rss_mb(), "worker_peak_rss_mb": workers}))


def measure(name: str, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh process; its JSON, or the error it failed with."""
    command = [sys.executable, __file__, "--measure", name, "--data", str(args.data), *(["--quick"] * args.quick)]
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def keras_results(args: argparse.Namespace) -> dict[str, dict]:
    """The tutorial's two experiments in the Keras venv, for as many epochs as imgclf's rows ran."""
    from keras_compare import run_keras

    results = {}
    for experiment, experiment_epochs in zip(("cnn", "vgg16"), epoch_counts(args)):
        print(f"running the Keras tutorial's {experiment} ...", file=sys.stderr, flush=True)
        try:
            results[experiment] = run_keras(experiment, args.data, experiment_epochs)
        except RuntimeError as error:
            results[experiment] = {"error": str(error).splitlines()[0]}
    return results


def cell(figures: dict, key: str, fmt: str) -> str:
    return figures["error"] if "error" in figures else format(figures[key], fmt)


def rss(figures: dict) -> str:
    """This process's peak RSS. Child processes are left out: `import torch` itself starts one (430 MB here)."""
    return "" if "error" in figures else f"{figures['peak_rss_mb']:.0f}"


def keras_cells(keras: dict | None, experiment: str, ours: dict) -> list[str]:
    """Keras's s/epoch and Keras ÷ imgclf, or empty cells without `--compare-keras`."""
    if keras is None:
        return []
    theirs = keras[experiment]
    if "error" in theirs:
        return [theirs["error"], ""]
    ratio = f"{theirs['mean_epoch_seconds'] / ours['seconds']:.1f}×" if "error" not in ours else ""
    return [f"{theirs['mean_epoch_seconds']:.2f} (RSS {theirs['peak_rss_mb']:.0f} MB)", ratio]


def table(results: dict[str, dict], keras: dict | None, args: argparse.Namespace) -> list[str]:
    """The markdown table of every measurement (and Keras's figures beside the two it also runs)."""
    cnn, vgg = results["seed-cnn"], results["seed-vgg16 augmented"]
    stream = results["streaming"]
    rows = [
        ["seed-cnn s/epoch (augmented, 30 × 32)", cell(cnn, "seconds", ".2f"), rss(cnn), "≤ 0.5",
         *keras_cells(keras, "cnn", cnn)],
        ["seed-vgg16 s/epoch (augmented, 30 × 32)", cell(vgg, "seconds", ".2f"), rss(vgg), "≤ 6",
         *keras_cells(keras, "vgg16", vgg)],
    ]  # fmt: skip
    if keras is not None and "error" not in keras["cnn"] and "error" not in cnn:
        rows.append(
            ["seed-cnn val accuracy at the end", f"{cnn['val_accuracy']:.3f}", "", "",
             f"{keras['cnn']['final_val_accuracy']:.3f}", ""]
        )  # fmt: skip
    single = [
        ("seed-vgg16 30 epochs on the feature cache, s (extraction included)", "seed-vgg16 cached", "seconds",
         ".1f", "≤ 15"),
        ("Lite0 predict from JPEG files, img/s, torch", "lite0 predict torch", "images_per_second", ".1f", ""),
        ("Lite0 predict from JPEG files, img/s, onnxruntime", "lite0 predict onnx", "images_per_second", ".1f",
         "≥ 150"),
        ("Lite0 predict from JPEG files, img/s, OpenVINO", "lite0 predict openvino", "images_per_second", ".1f",
         "≥ 150"),
        ("Lite0 feature extraction from the 200 JPEG files, first run (PyTorch), img/s", "lite0 extraction",
         "images_per_second", ".1f", "≥ 120"),
        ("Lite0 feature extraction, the 200 photos, backbone exported before (OpenVINO), img/s",
         "lite0 extraction, exported", "images_per_second", ".1f", "≥ 120"),
        ("Lite0 feature extraction, the photos 5 times (1,000, export included, OpenVINO), img/s",
         "lite0 extraction ×5", "images_per_second", ".1f", "≥ 120"),
        ("index 100,000 files, s", "index 100k files", "seconds", ".2f", "< 10"),
    ]  # fmt: skip
    for label, name, key, fmt, target in single:
        rows.append([label, cell(results[name], key, fmt), rss(results[name]), target, *[""] * (2 * bool(keras))])
    if "error" in stream:
        rows.append(["streaming train", stream["error"], "", "", *[""] * (2 * bool(keras))])
    else:
        label = f"streaming train, {stream['images']:,} JPEGs from disk (--cache-mem 0), img/s"
        workers = f"{rss(stream)} (+ ≤ {stream['worker_peak_rss_mb']:.0f} per worker)"
        rows.append([label, f"{stream['images'] / stream['seconds']:.0f}", workers, "RSS < 2048",
                     *[""] * (2 * bool(keras))])  # fmt: skip
    rows.append(["`imgclf --help`, s (median of 5 fresh processes)", cell(results["imgclf --help"], "seconds", ".2f"),
                 "", "< 0.5", *[""] * (2 * bool(keras))])  # fmt: skip
    header = ["measurement", "imgclf", "peak RSS MB", "target", *(["Keras", "Keras ÷ imgclf"] if keras else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    bf16 = "AVX512-BF16" if "avx512_bf16" in cpuinfo else "no native bf16"
    return f"{cpu}, {os.cpu_count()} cores ({bf16}), torch {torch.__version__}, imgclf {imgclf.__version__}"


def main() -> None:
    args = parse_args()
    if args.measure is not None:
        measure_here(args.measure, args)
        return
    started = time.perf_counter()
    results = {name: measure(name, args) for name in MEASUREMENTS}
    keras = keras_results(args) if args.compare_keras else None
    command = " ".join(["bench/run_all.py", *sys.argv[1:]])
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}; `{command}` took {time.perf_counter() - started:.0f} s")
    print("\n".join(table(results, keras, args)))


if __name__ == "__main__":
    main()
