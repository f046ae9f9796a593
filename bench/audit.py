"""Time `imgclf audit` on generated folders of small JPEG and PNG images with planted duplicates.

    .venv/bin/python bench/audit.py                      # 10,000 images, 4 classes, train/val/test
    .venv/bin/python bench/audit.py --count 2000 --workers 1 --keep /tmp/audit-bench

Images are smooth random colour fields with a random shape, 64-160 px a side, 70% JPEG and 30% PNG, split
80/10/10 into train/, val/ and test/. About 1% of them are planted copies of others: identical files in another
split (leakage) or in the same class, and resized, recompressed JPEG copies in another split (near-duplicates).
Reported: images/s and seconds of the audit itself (`audit_folders`), of writing audit.json and audit.html,
peak RSS of this process (most of it is the torch import every imgclf command pays) and of the largest worker,
and how many planted duplicates were found, plus any group nothing was planted in.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imgclf.audit.folders import audit_folders
from imgclf.audit.writing import write_audit

SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="images in all, planted copies included")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--workers", type=int, help="decoding processes (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="generate into DIR (which must not exist) and keep it")
    return parser.parse_args()


def random_picture(rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field of random size with one random rectangle or ellipse on it."""
    width, height = (int(v) for v in rng.integers(64, 161, size=2))
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(field)
    x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
    y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
    colour = tuple(rng.integers(0, 256, size=3).tolist())
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1 + 8, y1 + 8), fill=colour)
    return field


def encode(picture: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def generate(root: Path, count: int, classes: int, seed: int) -> dict[str, list[tuple[Path, Path]]]:
    """Write the folders; returns the planted (original, copy) pairs by kind."""
    rng = np.random.default_rng(seed)
    chooser = random.Random(seed)
    class_names = [f"class{c}" for c in range(classes)]
    planted_count = max(4, count // 100)
    kinds = {
        "exact across splits": planted_count * 2 // 5,
        "near across splits": planted_count * 2 // 5,
        "exact within a class": planted_count // 5,
    }
    originals = count - sum(kinds.values())
    placed: list[Path] = []
    for i in range(originals):
        split = chooser.choices([s for s, _ in SPLITS], weights=[w for _, w in SPLITS])[0]
        fmt = "JPEG" if rng.random() < 0.7 else "PNG"
        path = root / split / class_names[i % classes] / f"img{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(random_picture(rng), fmt))
        placed.append(path)
    planted: dict[str, list[tuple[Path, Path]]] = {kind: [] for kind in kinds}
    sources = chooser.sample(placed, sum(kinds.values()))
    for kind, how_many in kinds.items():
        for number in range(how_many):
            source = sources.pop()
            if kind == "exact within a class":
                copy = source.with_name(f"copy{number:04d}{source.suffix}")
                shutil.copyfile(source, copy)
            else:
                other_split = chooser.choice([s for s, _ in SPLITS if s != source.parts[-3]])
                copy = root / other_split / source.parent.name / f"{kind.split()[0]}{number:04d}.jpg"
                copy.parent.mkdir(parents=True, exist_ok=True)
                if kind.startswith("exact"):
                    copy = copy.with_suffix(source.suffix)
                    shutil.copyfile(source, copy)
                else:
                    picture = Image.open(source).convert("RGB")
                    smaller = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4), Image.BILINEAR)
                    copy.write_bytes(encode(smaller, "JPEG"))
            planted[kind].append((source, copy))
    return planted


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or Path(temporary) / "data"
        if root.exists():
            raise SystemExit(f"{root} already exists; give --keep a new folder.")
        started = time.perf_counter()
        planted = generate(root, args.count, args.classes, args.seed)
        print(f"generated {args.count} images in {time.perf_counter() - started:.1f} s under {root}")

        started = time.perf_counter()
        report = audit_folders({name: root / name for name, _ in SPLITS}, workers=args.workers)
        audit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        write_audit(report, Path(temporary) / "out")
        write_seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    images = len(report.files)
    print(f"images audited: {images}")
    print(f"audit: {audit_seconds:.2f} s, {images / audit_seconds:.0f} images/s")
    print(f"write audit.json + audit.html: {write_seconds:.2f} s")
    print(f"peak RSS: {peak_mb:.0f} MB (this process), {worker_peak_mb:.0f} MB (largest worker process)")
    groups = {frozenset(f.path for f in group.files): group for group in report.groups}
    explained = set()
    for kind, pairs in planted.items():
        found = 0
        for source, copy in pairs:
            for members, group in groups.items():
                if str(source) in members and str(copy) in members:
                    expected_kind = "exact" if kind.startswith("exact") else "near"
                    found += group.kind == expected_kind and group.leakage == ("across" in kind)
                    explained.add(members)
        print(f"planted {kind}: found {found} of {len(pairs)}")
    print(f"groups with nothing planted in them: {len(set(groups) - explained)}")
    print(f"problems: {report.problems()}")


if __name__ == "__main__":
    main()
