"""The data API as a whole: documented at /openapi.json, JSON errors, and no request writes outside the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.studio.conftest import tree


def outside(tmp_path: Path) -> dict[str, str]:
    """Every file under `tmp_path` except the workspace's, with a hash of its bytes."""
    return {name: digest for name, digest in tree(tmp_path).items() if not name.startswith("workspace/")}


def refused(client, requests: list[tuple[str, str, dict]]) -> None:
    """Send each `(method, url, arguments)` and check that it is refused with a JSON error."""
    for method, url, arguments in requests:
        response = getattr(client, method)(url, **arguments)
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
        assert "error" in response.json()


def test_no_request_writes_outside_the_workspace(client, photos, tmp_path, cars_planes):
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    car = sorted(photos.data_dir.joinpath("cars").iterdir())[0]
    before = outside(tmp_path)
    photo = ("files", ("../../../victim/owned.jpg", car.read_bytes(), "image/jpeg"))
    requests = [
        ("post", "/api/projects", {"json": {"name": "../victim"}}),
        ("post", "/api/projects", {"json": {"name": "/tmp/victim"}}),
        ("post", "/api/projects/import", {"json": {"name": "../victim2", "folder": str(cars_planes / "val_set")}}),
        ("post", "/api/projects/photos/classes", {"json": {"name": "../../victim"}}),
        ("post", "/api/projects/photos/classes/..%2F..%2F..%2Fvictim/images", {"files": [photo]}),
        ("post", "/api/projects/..%2Fvictim/classes", {"json": {"name": "x"}}),
        ("post", "/api/projects/photos/moves", {"json": {"images": ["../../../victim/keep.txt"], "to": "cars"}}),
        ("post", "/api/projects/photos/moves", {"json": {"images": [f"cars/{car.name}"], "to": "../../../victim"}}),
        ("post", "/api/projects/photos/moves", {"json": {"images": ["cars/../../project.json"], "to": "planes"}}),
        ("post", "/api/projects/photos/undo", {"json": {"journal": "../../../victim/keep.txt"}}),
        ("get", "/api/projects/photos/thumbnails/..%2F..%2F..%2Fvictim%2Fkeep.txt", {}),
        ("get", "/api/projects/photos/files/..%2F..%2F..%2Fvictim%2Fkeep.txt", {}),
        ("get", "/api/projects/photos/files/..%2Fproject.json", {}),
    ]
    refused(client, requests)
    assert outside(tmp_path) == before
    assert [project.name for project in client.app.state.workspace.projects()] == ["photos"]


def test_the_original_photo_is_served_as_stored(client, photos):
    car = sorted(photos.data_dir.joinpath("cars").iterdir())[0]
    response = client.get(f"/api/projects/photos/files/cars/{car.name}")
    assert response.status_code == 200 and response.content == car.read_bytes()
    assert response.headers["content-type"] == "image/jpeg"


def test_projects_are_listed_and_unknown_ones_are_404(client, photos):
    assert [p["name"] for p in client.get("/api/projects").json()["projects"]] == ["photos"]
    missing = client.get("/api/projects/fish")
    assert missing.status_code == 404 and "no project 'fish'" in missing.json()["error"]
    assert client.get("/api/no-such-endpoint").json()["error"].startswith("Nothing at /api/no-such-endpoint")


def test_the_api_is_documented_and_the_page_is_served(client):
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "imgclf studio"
    assert {
        "/api/projects",
        "/api/projects/import",
        "/api/projects/{project}/classes/{class_name}/images",
        "/api/projects/{project}/images",
        "/api/projects/{project}/moves",
        "/api/projects/{project}/undo",
    } <= set(schema["paths"])
    upload = schema["paths"]["/api/projects/{project}/classes/{class_name}/images"]["post"]
    assert "files" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_links_in_the_data_folder_to_elsewhere_are_never_followed(client, photos, tmp_path):
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "secret.jpg").write_bytes(sorted(photos.data_dir.joinpath("cars").iterdir())[0].read_bytes())
    (photos.data_dir / "linked").symlink_to(tmp_path / "victim", target_is_directory=True)
    (photos.data_dir / "planes" / "deep").symlink_to(tmp_path / "victim", target_is_directory=True)
    (photos.root / "data.quarantine").mkdir()
    (photos.root / "data.quarantine" / "cars").symlink_to(tmp_path / "victim", target_is_directory=True)
    (photos.data_dir / "cars" / "secret.jpg").symlink_to(tmp_path / "victim" / "secret.jpg")
    (photos.data_dir / "cars" / "deep").mkdir()
    car = sorted(photos.data_dir.joinpath("cars").glob("*.jpg"))[0]
    (photos.data_dir / "cars" / "deep" / car.name).write_bytes(car.read_bytes())
    before = outside(tmp_path)
    photo = ("files", ("owned.jpg", car.read_bytes(), "image/jpeg"))
    requests = [
        ("post", "/api/projects/photos/classes/linked/images", {"files": [photo]}),
        ("post", "/api/projects/photos/moves", {"json": {"images": [f"cars/{car.name}"], "to": "linked"}}),
        ("post", "/api/projects/photos/moves", {"json": {"images": [f"cars/{car.name}"], "to": "quarantine"}}),
        ("post", "/api/projects/photos/moves", {"json": {"images": [f"cars/deep/{car.name}"], "to": "planes"}}),
        ("get", "/api/projects/photos/files/cars/secret.jpg", {}),
        ("get", "/api/projects/photos/thumbnails/cars/secret.jpg", {}),
        ("get", "/api/projects/photos/files/linked/secret.jpg", {}),
    ]
    refused(client, requests)
    assert outside(tmp_path) == before


@pytest.mark.parametrize(
    ("folder", "method", "url", "body"),
    [
        ("runs", "post", "/api/projects/cars-planes/train", {"recipe": "cnn"}),
        ("audit", "post", "/api/projects/cars-planes/audit", {}),
        ("journals", "post", "/api/projects/cars-planes/moves", None),
    ],
)
def test_a_projects_folder_linked_to_elsewhere_is_never_written(client, project, tmp_path, folder, method, url, body):
    (tmp_path / "elsewhere").mkdir()
    (project.root / folder).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    car = sorted((project.data_dir / "cars").iterdir())[0].name
    body = {"images": [f"cars/{car}"], "to": "planes"} if body is None else body

    response = getattr(client, method)(url, json=body)

    assert response.status_code == 400 and "leaves the project" in response.json()["error"]
    assert client.get("/api/jobs").json() == {"jobs": []} and list((tmp_path / "elsewhere").iterdir()) == []
