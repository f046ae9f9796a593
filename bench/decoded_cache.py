"""Time decoding a photo against reading it from the decoded-image cache, per photo and for a whole folder.

    .venv/bin/python bench/decoded_cache.py
    .venv/bin/python bench/decoded_cache.py --sizes 64 224 --data ../shared/datasets/cars-planes

Per photo, on one thread, the best of `--repeats` passes over every photo (the files are read once first, so
the disk's page cache holds them in every column): "decode" is `load_tensor`; "miss" is `DecodedCache.load`
when the entry is absent (hash, decode, write); "hit" is `DecodedCache.load` when it is present (read the
photo and hash it, read the entry and check its CRC). The phone photos (longer side over 1000 px) are shown
apart from the rest. Then the wall time of `decode_images` over the whole folder on 2 threads, as training
runs it: without the cache, filling it, reading it. The cache lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import add_data_option
from PIL import Image

from imgclf.config import Preprocessing
from imgclf.data.decoded_cache import DecodedCache
from imgclf.data.folders import FolderIndex, index_folder, list_images
from imgclf.data.images import load_tensor
from imgclf.data.loading import decode_images


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def best_ms(files: list[str], action: Callable[[str], object], repeats: int, before: Callable[[], None]) -> float:
    """The best of `repeats` passes of `action` over `files`, in milliseconds per file."""
    passes = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        for path in files:
            action(path)
        passes.append((time.perf_counter() - started) / len(files) * 1000)
    return min(passes)


def per_photo_ms(files: list[str], size: int, repeats: int) -> tuple[float, float, float]:
    """(decode, miss, hit) milliseconds per photo at `size` px."""
    preprocessing = Preprocessing(image_size=size)
    cache = DecodedCache(preprocessing)

    def clear() -> None:
        shutil.rmtree(cache.folder, ignore_errors=True)

    decode = best_ms(files, lambda path: load_tensor(path, preprocessing), repeats, lambda: None)
    miss = best_ms(files, cache.load, repeats, clear)
    hit = best_ms(files, cache.load, repeats, lambda: None)
    return decode, miss, hit


def folder_seconds(index: FolderIndex, size: int) -> list[float]:
    """Seconds of `decode_images` on 2 threads: without the cache, filling it, reading it."""
    preprocessing = Preprocessing(image_size=size)
    shutil.rmtree(DecodedCache(preprocessing).folder, ignore_errors=True)
    timings = []
    for cache in (None, DecodedCache(preprocessing), DecodedCache(preprocessing)):
        started = time.perf_counter()
        decode_images(index, preprocessing, workers=2, cache=cache)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    args = parse_args()
    os.environ["IMGCLF_CACHE"] = tempfile.mkdtemp(prefix="imgclf-bench-")
    files = list_images([args.data])
    for path in files:
        Path(path).read_bytes()
    large = [path for path in files if max(Image.open(path).size) > 1000]
    groups = {f"{len(files) - len(large)} photos ≤ 1000 px": [p for p in files if p not in large]}
    groups[f"{len(large)} phone photos"] = large
    print("| image size | photos | mean file KB | decode ms | miss ms | hit ms | decode / hit |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for name, group in groups.items():
            kb = statistics.mean(os.path.getsize(path) for path in group) / 1024
            decode, miss, hit = per_photo_ms(group, size, args.repeats)
            print(f"| {size} | {name} | {kb:.0f} | {decode:.3f} | {miss:.3f} | {hit:.3f} | {decode / hit:.0f}× |")
    print()
    print("| image size | decode_images, 2 threads: no cache s | filling the cache s | from the cache s |")
    print("|---|---|---|---|")
    index = index_folder(args.data / "training_set")
    val = index_folder(args.data / "val_set")
    index.files, index.labels = index.files + val.files, index.labels + val.labels
    for size in args.sizes:
        print(f"| {size} | " + " | ".join(f"{seconds:.3f}" for seconds in folder_seconds(index, size)) + " |")
    shutil.rmtree(os.environ["IMGCLF_CACHE"])


if __name__ == "__main__":
    main()
