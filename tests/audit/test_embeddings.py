"""Embedding near-duplicates and outliers: what a backbone's features find among real photos that pHash misses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from tests.conftest import copy_photos
from torch import nn

from imgclf.audit.duplicates import DuplicateGroup
from imgclf.audit.embeddings import similar_pairs
from imgclf.audit.folders import audit_folders
from imgclf.audit.report import AuditReport
from imgclf.audit.writing import write_audit
from imgclf.config import ImgclfError
from imgclf.devices import CPU, resolve_precision
from imgclf.models import BuildOptions, create_model, get_spec
from imgclf.models.heads import fixed_prefix_length
from imgclf.training.features import FeatureCache, backbone_key, cache_root, extract_features


def save_variant(source: Path, destination: Path, change) -> Path:
    with Image.open(source) as photo:
        change(photo.convert("RGB")).save(destination, quality=90)
    return destination


def cropped_mirror(photo: Image.Image) -> Image.Image:
    """The photo without its right 15%, mirrored."""
    return ImageOps.mirror(photo.crop((0, 0, photo.width * 85 // 100, photo.height)))


def half_size(photo: Image.Image) -> Image.Image:
    return photo.resize((photo.width // 2, photo.height // 2))


@pytest.fixture(scope="module")
def looked(tmp_path_factory: pytest.TempPathFactory, cars_planes: Path) -> tuple[AuditReport, dict[str, Path], Path]:
    """One audit, with Lite0, of a few real photos plus planted copies and a picture of noise (shared: slow)."""
    root = tmp_path_factory.mktemp("embedded")
    train = copy_photos(cars_planes / "training_set", root / "train", 6)
    val = copy_photos(cars_planes / "val_set", root / "val", 3)
    car, other_car = sorted((train / "cars").iterdir())[:2]
    plane = sorted((train / "planes").iterdir())[0]
    planted = {
        "car": car,
        "plane": plane,
        "other car": other_car,
        "mirrored": save_variant(car, val / "cars" / "mirrored.jpg", ImageOps.mirror),
        "cropped": save_variant(plane, train / "cars" / "cropped.jpg", cropped_mirror),
        "smaller": save_variant(other_car, train / "cars" / "smaller.jpg", half_size),
    }
    noise = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    planted["noise"] = train / "planes" / "noise.png"
    Image.fromarray(noise).save(planted["noise"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE", str(root / "cache"))
        report = audit_folders({"train": train, "val": val}, workers=1, model="efficientnet_lite0")
    return report, planted, root


def holding(groups: list[DuplicateGroup], *paths: Path) -> list[DuplicateGroup]:
    return [group for group in groups if {str(path) for path in paths} <= {file.path for file in group.files}]


def test_a_mirrored_copy_in_another_split_is_an_embedding_near_duplicate_phash_misses(looked):
    report, planted, _ = looked
    assert holding(report.groups, planted["car"], planted["mirrored"]) == []
    [group] = holding(report.embedding_groups, planted["car"], planted["mirrored"])
    assert group.kind == "embedding" and group.leakage and not group.label_conflict
    assert report.similarity <= group.similarity < 1


def test_a_cropped_mirror_in_another_class_is_a_label_conflict(looked):
    report, planted, _ = looked
    assert holding(report.groups, planted["plane"], planted["cropped"]) == []
    [group] = holding(report.embedding_groups, planted["plane"], planted["cropped"])
    assert group.label_conflict and group.class_names == ["cars", "planes"] and not group.leakage


def test_a_copy_phash_already_groups_is_not_repeated(looked):
    report, planted, _ = looked
    assert len(holding(report.groups, planted["other car"], planted["smaller"])) == 1
    assert holding(report.embedding_groups, planted["other car"], planted["smaller"]) == []


def test_a_picture_of_noise_among_photos_is_the_outlier(looked):
    report, planted, _ = looked
    assert [outlier.file.path for outlier in report.outliers][:1] == [str(planted["noise"])]
    assert all(0 <= outlier.score <= 1 for outlier in report.outliers)
    assert report.problems()["outliers"] == len(report.outliers)


def test_features_are_cached_once_per_picture_for_the_audit_and_once_for_training(looked, monkeypatch):
    report, _, root = looked
    pictures = len({file.facts.content_hash for file in report.files if file.readable})
    folders = sorted(folder for folder in (root / "cache" / "features").iterdir() if folder.is_dir())
    assert [len(list(folder.rglob("*.safetensors"))) for folder in folders] == [pictures, pictures]

    monkeypatch.setenv("IMGCLF_CACHE", str(root / "cache"))
    network = create_model("efficientnet_lite0", 2, options=BuildOptions(pretrained=True))
    training = nn.Sequential(network.backbone, *network.head[: fixed_prefix_length(network.head)]).eval()
    preprocessing = get_spec("efficientnet_lite0").preprocessing
    precision = resolve_precision("auto", CPU)
    key = backbone_key("efficientnet_lite0", "pretrained", preprocessing, training, precision)
    cache = FeatureCache(cache_root() / key)
    paths = [file.path for file in report.files if file.readable]
    features, _, _, computed = extract_features(training, paths, preprocessing, cache, autocast_dtype=precision)
    assert computed == 0  # training on the audited photos runs the backbone on none of them
    assert features.shape == (len(paths), 1280)


def test_outputs_carry_the_groups_and_outliers(looked, tmp_path):
    report, planted, _ = looked
    written = write_audit(report, tmp_path / "out")
    saved = json.loads(written[0].read_text())
    assert saved["settings"]["model"] == "efficientnet_lite0"
    assert saved["problems"]["near-duplicates"] == len(saved["embedding_duplicates"]) >= 2
    assert all(group["similarity"] >= saved["settings"]["similarity"] for group in saved["embedding_duplicates"])
    assert saved["outliers"][0]["path"] == str(planted["noise"])
    page = written[1].read_text()
    assert "Embedding near-duplicates" in page and "Outliers" in page and "noise.png" in page


def test_similar_pairs_match_a_direct_comparison():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 8))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    firsts, seconds = similar_pairs(features, 0.6, chunk=7)
    similarity = features @ features.T
    expected = {(i, j) for i in range(50) for j in range(i + 1, 50) if similarity[i, j] >= 0.6}
    assert set(zip(firsts.tolist(), seconds.tolist())) == expected and len(firsts) == len(expected) > 0


def test_a_similarity_outside_0_to_1_is_refused(tmp_path, cars_planes):
    copy_photos(cars_planes / "val_set", tmp_path / "val", 1)
    with pytest.raises(ImgclfError, match="--similarity"):
        audit_folders({"train": tmp_path / "val"}, similarity=1.5)
