"""How well `imgclf audit` finds wrong labels: flip some labels of real photos, see which the finder flags.

    .venv/bin/python bench/label_issues.py                       # cars-planes 10%, TrashNet 5%, seeds 0 1 2
    .venv/bin/python bench/label_issues.py --seeds 0 --cache /tmp/label-bench-cache

The tutorial's 160 training photos get 10% of their labels moved to the other class; TrashNet's 2,527 photos
5% of each class's, each to another of its 6 classes drawn at random (seeded). No file is moved: the finder
(`audit.labels.find_label_issues`) is handed the flipped labels with the backbone's features. Reported per seed:
recall (the share of flipped photos flagged; target 90% or more), precision (the share of flagged photos that
were flipped; target 70% or more), and the seconds the finder took, which is what the audit adds to feature
extraction for label issues (target under 10 s for 3,000 images). The finder is run once on the true labels
first: that warms up the imports, and its flags are the dataset's own suspect labels, counted apart among the
flagged photos that were not flipped. Feature extraction (Lite0 through the feature cache, into `--cache` or a
fresh temporary folder) and outliers and embedding near-duplicates are timed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import CARS_PLANES

from imgclf.audit.embeddings import Embeddings, embed_files, find_embedding_duplicates, find_outliers
from imgclf.audit.inspection import AuditedFile, inspect_files
from imgclf.audit.labels import find_label_issues
from imgclf.audit.options import DEFAULT_MODEL, DEFAULT_SIMILARITY
from imgclf.data.folders import index_folder

TRASHNET = CARS_PLANES.parent / "trashnet"
DATASETS = (("cars-planes", CARS_PLANES / "training_set", 0.10), ("trashnet", TRASHNET, 0.05))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="draws of the flipped labels")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="backbone (default %(default)s)")
    parser.add_argument("--cache", type=Path, help="feature cache folder to use and keep (default: a fresh one)")
    return parser.parse_args()


def audited_files(root: Path) -> list[AuditedFile]:
    """The labelled images under `root`, read as the audit reads them (content hashes, sizes)."""
    index = index_folder(root)
    facts = inspect_files(index.files, os.cpu_count() or 1)
    return [
        AuditedFile("train", index.class_names[label], str(Path(path).relative_to(root)), file_facts)
        for path, label, file_facts in zip(index.files, index.labels, facts)
    ]


def flip_labels(files: list[AuditedFile], fraction: float, seed: int) -> tuple[list[AuditedFile], set[str]]:
    """`files` with `fraction` of each class's labels moved to another class drawn at random; the moved paths."""
    rng = np.random.default_rng(seed)
    class_names = sorted({file.class_name for file in files})
    new_class = {}
    for name in class_names:
        members = [file for file in files if file.class_name == name]
        others = [other for other in class_names if other != name]
        for index in rng.choice(len(members), round(fraction * len(members)), replace=False):
            new_class[members[index].path] = others[rng.integers(len(others))]
    flipped = [dataclasses.replace(file, class_name=new_class.get(file.path, file.class_name)) for file in files]
    return flipped, set(new_class)


def measure(name: str, root: Path, fraction: float, seeds: list[int], model: str) -> None:
    files = audited_files(root)
    started = time.perf_counter()
    embeddings = embed_files(files, model)
    print(f"\n{name}: {len(embeddings.files)} photos, {model} features in {time.perf_counter() - started:.1f} s")
    own = {issue.file.path for issue in find_label_issues(embeddings)[0]}
    print(f"  flagged with the true labels (the dataset's own suspects): {len(own)}")
    recalls, precisions = [], []
    for seed in seeds:
        flipped_files, flipped = flip_labels(embeddings.files, fraction, seed)
        started = time.perf_counter()
        issues, _ = find_label_issues(dataclasses.replace(embeddings, files=flipped_files))
        seconds = time.perf_counter() - started
        flagged = {issue.file.path for issue in issues}
        found = len(flagged & flipped)
        recalls.append(found / len(flipped))
        precisions.append(found / max(len(flagged), 1))
        print(
            f"  seed {seed}: {len(flipped)} flipped, {len(flagged)} flagged, {found} of them flipped: "
            f"recall {recalls[-1]:.1%}, precision {precisions[-1]:.1%}; of the {len(flagged) - found} others, "
            f"{len((flagged - flipped) & own)} are flagged with the true labels too; finder {seconds:.2f} s"
        )
    recall, precision = statistics.mean(recalls), statistics.mean(precisions)
    print(f"  mean over {len(seeds)} seeds: recall {recall:.1%}, precision {precision:.1%}")
    time_the_rest(embeddings)


def time_the_rest(embeddings: Embeddings) -> None:
    started = time.perf_counter()
    outliers = find_outliers(embeddings)
    middle = time.perf_counter()
    groups = find_embedding_duplicates(embeddings, [], DEFAULT_SIMILARITY)
    print(
        f"  outliers: {len(outliers)} in {middle - started:.2f} s; embedding near-duplicate groups "
        f"(pHash groups not subtracted): {len(groups)} in {time.perf_counter() - middle:.2f} s"
    )


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["IMGCLF_CACHE"] = str(args.cache or scratch)
        for name, root, fraction in DATASETS:
            measure(name, root, fraction, args.seeds, args.model)


if __name__ == "__main__":
    main()
