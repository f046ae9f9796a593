"""Shared fixtures: the real car/plane photos, small copies of them, and one run trained on them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgclf

CARS_PLANES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cars-planes"


@pytest.fixture(autouse=True)
def feature_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the feature cache of every test out of the user's home folder."""
    folder = tmp_path_factory.mktemp("imgclf-cache")
    monkeypatch.setenv("IMGCLF_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def cars_planes() -> Path:
    """The tutorial's photos (read-only): training_set/ and val_set/ with cars/ and planes/."""
    assert (CARS_PLANES / "training_set").is_dir(), f"real photos expected at {CARS_PLANES}"
    return CARS_PLANES


def copy_photos(source: Path, destination: Path, per_class: int) -> Path:
    """Copy the first `per_class` photos of each class folder of `source` into `destination`."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        target = destination / class_dir.name
        target.mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(photo, target / photo.name)
    return destination


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: int = 12) -> Path:
    """Write a one-colour image of `size` pixels to `path` (format from its extension), making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


@pytest.fixture
def small_photos(tmp_path: Path, cars_planes: Path) -> Path:
    """A writable copy of a few real photos: train/ (8 per class) and val/ (3 per class)."""
    copy_photos(cars_planes / "training_set", tmp_path / "data" / "train", 8)
    copy_photos(cars_planes / "val_set", tmp_path / "data" / "val", 3)
    return tmp_path / "data"


@pytest.fixture
def flat_photos(tmp_path: Path, cars_planes: Path) -> Path:
    """A flat folder of real photos (8 training and 3 validation per class, named `car_…`, `plane_…`) and its
    `labels.csv`: file, label and split (train or val) per photo."""
    return make_flat_photos(tmp_path / "flat", cars_planes)


@pytest.fixture(scope="session")
def multi_label_run(tmp_path_factory: pytest.TempPathFactory, cars_planes: Path) -> imgclf.Run:
    """seed-cnn trained briefly on `flat_photos` labelled cars or planes, and wide (`label_wide_photos`), with
    `--resize pad` (shared by the tests that only read it)."""
    folder = make_flat_photos(tmp_path_factory.mktemp("multi") / "flat", cars_planes)
    run_dir = tmp_path_factory.mktemp("runs") / "multi-label"
    return imgclf.train(
        labels=label_wide_photos(folder), model="seed-cnn", resize="pad", epochs=4, seed=0, out=str(run_dir)
    )


def make_flat_photos(folder: Path, cars_planes: Path) -> Path:
    """Fill `folder` as `flat_photos` describes."""
    folder.mkdir(parents=True)
    rows = [("file", "label", "split")]
    for split, source, count in (("train", "training_set", 8), ("val", "val_set", 3)):
        for class_name in ("cars", "planes"):
            for photo in sorted((cars_planes / source / class_name).iterdir())[:count]:
                name = f"{class_name[:-1]}_{photo.name}"
                shutil.copy(photo, folder / name)
                rows.append((name, class_name, split))
    write_rows(folder / "labels.csv", rows)
    return folder


WIDE = 1.7
"""A photo at least this many times as wide as high (16:9 and wider) also has the label `wide`."""


def label_wide_photos(folder: Path) -> Path:
    """`folder/multi.csv`: `flat_photos`' rows, each photo labelled with its class and, when it is wide (a real
    property: its aspect ratio), `wide` too (`"cars;wide"`)."""
    with (folder / "labels.csv").open(newline="") as file:
        header, *rows = list(csv.reader(file))
    for row in rows:
        width, height = Image.open(folder / row[0]).size
        row[1] += ";wide" if width >= WIDE * height else ""
    return write_rows(folder / "multi.csv", [tuple(header), *map(tuple, rows)])


def write_rows(path: Path, rows: list[tuple[str, ...]]) -> Path:
    """Write `rows` (the first names the columns) to the CSV `path`."""
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return path


def make_synthetic_classes(root: Path, class_counts: dict[str, int], size: int = 24, seed: int = 0) -> Path:
    """Write PNG images whose colour tells the class (one hue per class, plus noise)."""
    rng = np.random.default_rng(seed)
    for class_index, (name, count) in enumerate(class_counts.items()):
        folder = root / name
        folder.mkdir(parents=True)
        colour = np.zeros(3)
        colour[class_index % 3] = 200
        for i in range(count):
            pixels = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cars_planes: Path) -> imgclf.Run:
    """seed-cnn trained briefly on the real photos (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("runs") / "seed-cnn"
    return imgclf.train(
        cars_planes / "training_set",
        model="seed-cnn",
        val=str(cars_planes / "val_set"),
        augment="seed",
        epochs=6,
        steps_per_epoch=10,
        seed=0,
        out=str(out),
    )


def best_photo_per_class(run: imgclf.Run, folder: Path) -> dict[str, Path]:
    """For each class sub-folder of `folder`, the photo `run` puts in that class with the highest probability."""
    best = {}
    for class_name in run.class_names:
        photos = sorted((folder / class_name).glob("*.jpg"))
        right = [(p.probability, photo) for photo, p in zip(photos, run.predict(photos)) if p.label == class_name]
        assert right, f"{run.run_dir} classifies none of the {class_name} photos in {folder} right"
        best[class_name] = max(right)[1]
    return best


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's `history.csv`, as strings."""
    with (run_dir / "history.csv").open() as file:
        return list(csv.DictReader(file))
