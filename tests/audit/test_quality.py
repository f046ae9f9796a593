"""Image quality flags: each made-for-it picture gets its flag, real photos get none, and --fail-on quality exits 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tests.conftest import copy_photos

from imgclf.audit.folders import audit_folders
from imgclf.audit.quality import measure_looks, quality_problems
from imgclf.cli import main


def flags(report, name: str) -> list[str]:
    """The quality flags of the file called `name` ([] when it has none)."""
    return next((issue.problems for issue in report.quality_issues if Path(issue.file.path).name == name), [])


def test_a_black_image_is_too_dark_and_the_photos_are_fine(cars_planes, tmp_path):
    data = copy_photos(cars_planes / "training_set", tmp_path / "train", 5)
    Image.new("RGB", (320, 240), (3, 3, 3)).save(data / "cars" / "black.jpg")

    report = audit_folders({"train": data}, workers=1)

    assert [Path(issue.file.path).name for issue in report.quality_issues] == ["black.jpg"]
    assert flags(report, "black.jpg") == ["too dark", "low information"]
    assert report.problems()["quality"] == 1


def test_each_flag_on_a_picture_made_for_it(cars_planes, tmp_path):
    data = copy_photos(cars_planes / "training_set", tmp_path / "train", 4)
    photo = Image.open(sorted((data / "cars").iterdir())[0]).convert("RGB")
    photo.filter(ImageFilter.GaussianBlur(photo.width / 40)).save(data / "cars" / "blurred.jpg")
    photo.convert("L").save(data / "cars" / "grey.jpg")
    Image.new("RGB", (300, 200), (252, 252, 250)).save(data / "planes" / "white.png")
    photo.resize((600, 80)).save(data / "planes" / "strip.jpg")

    report = audit_folders({"train": data}, workers=1)

    assert flags(report, "blurred.jpg") == ["blurry"]
    assert flags(report, "grey.jpg") == ["grayscale among colour"]
    assert flags(report, "white.png") == ["too bright", "low information"]
    assert flags(report, "strip.jpg") == ["odd aspect ratio"]
    assert len(report.quality_issues) == 4


def test_grayscale_is_not_flagged_among_grayscale_pictures():
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).convert("RGB")
    looks = measure_looks(grey)
    assert looks.colour == 0
    assert quality_problems(looks, 640, 480, colour_dataset=False) == []
    assert quality_problems(looks, 640, 480, colour_dataset=True) == ["grayscale among colour"]


def test_a_small_picture_is_not_called_blurry_for_the_audit_stretching_it():
    smooth = Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((64, 64))
    looks = measure_looks(smooth)
    assert quality_problems(looks, 640, 480, colour_dataset=True) == ["blurry"]
    assert quality_problems(looks, 48, 40, colour_dataset=True) == []


def test_fail_on_quality_exits_3_and_the_outputs_name_the_flags(tmp_path, capsys):
    data = tmp_path / "train"
    for number, class_name in enumerate(("a", "b")):
        (data / class_name).mkdir(parents=True)
        Image.new("RGB", (200, 150), (10 * number, 0, 0)).save(data / class_name / '<b>"dark".jpg')
    out = tmp_path / "out"

    assert main(["audit", str(data), "--no-model", "--out", str(out), "--fail-on", "quality", "--workers", "1"]) == 3

    assert "quality (2)" in capsys.readouterr().err
    saved = json.loads((out / "audit.json").read_text())["quality"]
    assert [entry["problems"] for entry in saved] == [["too dark", "low information"]] * 2
    assert saved[0]["brightest"] < 0.37 and saved[0]["class"] == "a"
    page = (out / "audit.html").read_text()
    assert "Image quality (2)" in page and '<b>"dark"' not in page and "&lt;b&gt;&quot;dark&quot;" in page
