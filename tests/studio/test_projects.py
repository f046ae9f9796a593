"""Photos in a project: uploads checked and saved safely, imports that only read, listings with audit findings."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.serve.test_service import png_header
from tests.studio.conftest import BASE_URL, tree

from imgclf.audit.folders import audit_folders
from imgclf.audit.writing import write_audit
from imgclf.studio.app import create_app
from imgclf.studio.options import StudioOptions
from imgclf.studio.projects import safe_file_name


def png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (20, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, project: str, class_name: str, *files: tuple[str, bytes]):
    fields = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"/api/projects/{project}/classes/{class_name}/images", files=fields)


@pytest.fixture
def car(cars_planes: Path) -> bytes:
    return sorted((cars_planes / "training_set" / "cars").iterdir())[0].read_bytes()


def test_real_photos_are_added_and_counted(client, photos, car):
    response = upload(client, "photos", "cars", ("new car.jpg", car))
    assert response.status_code == 200
    assert response.json() == {"added": ["cars/new car.jpg"], "skipped": []}
    assert (photos.data_dir / "cars" / "new car.jpg").read_bytes() == car
    summary = client.get("/api/projects/photos").json()
    assert summary["classes"] == [{"name": "cars", "count": 5}, {"name": "planes", "count": 4}]
    assert summary["images"] == 9 and summary["audited"] is False


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"name,label\nplane.jpg,planes\n", "not a JPEG, PNG, BMP, GIF, WEBP, TIFF image"),
        (b"", "empty file"),
        (png_header(20_000, 20_000), "decompression bomb"),
    ],
    ids=["not an image", "empty", "decompression bomb"],
)
def test_what_is_not_a_safe_image_is_skipped_with_the_reason(client, photos, car, data, reason):
    before = tree(photos.data_dir)
    response = upload(client, "photos", "cars", ("bad.jpg", data), ("good.jpg", car))
    assert response.status_code == 200
    [skipped] = response.json()["skipped"]
    assert skipped["file"] == "bad.jpg" and reason in skipped["reason"]
    assert response.json()["added"] == ["cars/good.jpg"]
    assert set(tree(photos.data_dir)) - set(before) == {"cars/good.jpg"}


def test_a_photo_over_the_size_or_pixel_limit_is_skipped(tmp_path, car):
    options = StudioOptions(max_upload_bytes=len(car) - 1, max_pixels=100 * 100)
    with TestClient(create_app(tmp_path / "ws", options), base_url=BASE_URL) as client:
        client.post("/api/projects", json={"name": "p"})
        client.post("/api/projects/p/classes", json={"name": "cars"})
        response = upload(client, "p", "cars", ("big.jpg", car), ("wide.png", png(200)), ("small.png", png(50)))
    reasons = {entry["file"]: entry["reason"] for entry in response.json()["skipped"]}
    assert "larger than the limit" in reasons["big.jpg"]
    assert "over the limit of 10000 pixels" in reasons["wide.png"]
    assert response.json()["added"] == ["cars/small.png"]


def test_a_request_over_the_limit_of_all_its_files_is_refused(tmp_path, car):
    options = StudioOptions(max_upload_bytes=len(car), max_files=2)
    with TestClient(create_app(tmp_path / "ws", options), base_url=BASE_URL) as client:
        client.post("/api/projects", json={"name": "p"})
        client.post("/api/projects/p/classes", json={"name": "cars"})
        response = upload(client, "p", "cars", *[(f"{n}.jpg", car) for n in range(3)])
    assert response.status_code == 413 and "larger than a batch" in response.json()["error"]


def test_unsafe_names_are_stored_safely_and_nothing_is_overwritten(client, photos, car, tmp_path):
    hostile = "../../<img src=x onerror=alert(1)>.jpg"
    added = [upload(client, "photos", "cars", (hostile, car)).json()["added"][0] for _ in range(2)]
    assert added == ["cars/_img src=x onerror=alert(1)_.jpg", "cars/_img src=x onerror=alert(1)_-1.jpg"]
    assert all((photos.data_dir / image).read_bytes() == car for image in added)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace"]


@pytest.mark.parametrize(
    ("client_name", "image_format", "stored"),
    [
        ("photo.jpeg", "JPEG", "photo.jpeg"),
        ("photo.jpg", "PNG", "photo.png"),
        ("blob", "JPEG", "blob.jpg"),
        ("C:\\Users\\me\\cat.PNG", "PNG", "cat.PNG"),
        ("..", "JPEG", "photo.jpg"),
        (".hidden.jpg", "JPEG", "hidden.jpg"),
        ("a\x00b\nc.gif", "GIF", "a_b_c.gif"),
    ],
)
def test_stored_names_are_one_visible_component_with_the_right_extension(client_name, image_format, stored):
    assert safe_file_name(client_name, image_format) == stored


def test_a_class_named_like_the_quarantine_or_twice_is_refused(client, photos):
    assert client.post("/api/projects/photos/classes", json={"name": "Quarantine"}).status_code == 400
    assert client.post("/api/projects/photos/classes", json={"name": "cars"}).status_code == 400
    assert client.post("/api/projects/photos/classes", json={"name": "trucks"}).status_code == 201
    assert (photos.data_dir / "trucks").is_dir()


def test_import_copies_a_data_folder_and_never_writes_it(client, workspace, cars_planes, tmp_path):
    source = shutil.copytree(cars_planes / "val_set", tmp_path / "source")
    (source / "cars" / "notes.txt").write_text("not a photo")
    before = {path: os.stat(path).st_mtime_ns for path in source.rglob("*")}
    files_before = tree(source)
    response = client.post("/api/projects/import", json={"name": "imported", "folder": str(source)})
    assert response.status_code == 201
    assert response.json()["images"] == len(files_before) - 1
    assert tree(workspace.project("imported").data_dir) == {k: v for k, v in files_before.items() if "notes" not in k}
    assert tree(source) == files_before
    assert {path: os.stat(path).st_mtime_ns for path in source.rglob("*")} == before


def test_import_of_a_folder_without_classes_is_refused(client, workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    response = client.post("/api/projects/import", json={"name": "x", "folder": str(tmp_path / "empty")})
    assert response.status_code == 400 and "no class sub-folders" in response.json()["error"]
    response = client.post("/api/projects/import", json={"name": "x", "folder": str(tmp_path / "missing")})
    assert response.status_code == 400 and "is not a folder" in response.json()["error"]
    assert workspace.projects() == []


def test_import_of_a_dataset_split_into_sets_of_the_same_classes_is_refused(client, workspace, cars_planes):
    response = client.post("/api/projects/import", json={"name": "x", "folder": str(cars_planes)})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "(cars, planes): they look like splits, not classes" in message
    assert "holds training_set, val_set" in message and str(cars_planes / "training_set") in message
    assert workspace.projects() == []


def test_images_are_listed_in_pages_by_class(client, photos):
    everything = client.get("/api/projects/photos/images").json()
    assert everything["total"] == 8
    assert [image["class"] for image in everything["images"]] == ["cars"] * 4 + ["planes"] * 4
    page = client.get("/api/projects/photos/images", params={"class": "planes", "offset": 1, "limit": 2}).json()
    assert page["total"] == 4 and [image["id"] for image in page["images"]] == [
        image["id"] for image in everything["images"][5:7]
    ]
    assert client.get("/api/projects/photos/images", params={"class": "boats"}).status_code == 404
    assert client.get("/api/projects/photos/images", params={"limit": 0}).status_code == 400
    unknown = client.get("/api/projects/photos/images", params={"finding": "ugly"})
    assert unknown.status_code == 400 and "'label-issue'" in unknown.json()["error"]


def test_listing_shows_the_findings_of_a_real_audit(client, photos):
    cars = sorted((photos.data_dir / "cars").iterdir())
    shutil.copy(cars[0], photos.data_dir / "planes" / "copy.jpg")
    (photos.data_dir / "cars" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(photos.data_dir / "planes" / "night.jpg")
    write_audit(audit_folders({"data": photos.data_dir}, workers=1), photos.audit_dir)

    listed = {image["id"]: image["findings"] for image in client.get("/api/projects/photos/images").json()["images"]}
    assert [f["kind"] for f in listed["cars/broken.jpg"]] == ["unreadable"]
    [duplicate] = listed["planes/copy.jpg"]
    assert duplicate["kind"] == "duplicate" and f"cars/{cars[0].name}" in duplicate["detail"]
    assert "other classes" in duplicate["detail"] and duplicate["suggested"] is None
    assert "dark" in [f["kind"] for f in listed["planes/night.jpg"]]

    duplicates = client.get("/api/projects/photos/images", params={"finding": "duplicate"}).json()
    assert sorted(image["id"] for image in duplicates["images"]) == [f"cars/{cars[0].name}", "planes/copy.jpg"]
    audit = client.get("/api/projects/photos/audit").json()
    assert audit["summary"]["problems"]["corrupt"] == 1 and audit["summary"]["model"] is None
    assert audit["findings"]["duplicate"] == 2 and audit["findings"]["unreadable"] == 1
    assert client.get("/api/projects/photos").json()["audited"] is True


def test_a_project_never_audited_has_no_findings(client, photos):
    assert client.get("/api/projects/photos/audit").json() == {"summary": None, "findings": {}}
    assert all(image["findings"] == [] for image in client.get("/api/projects/photos/images").json()["images"])
