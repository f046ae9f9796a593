"""The runs endpoints over HTTP, on a real run trained in a studio project."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from tests.studio.conftest import BASE_URL, ProjectRun, jpeg_upload

import imgclf
from imgclf.studio.app import create_app
from imgclf.studio.options import StudioOptions


@pytest.fixture(scope="module")
def client(project_run: ProjectRun) -> TestClient:
    """The studio's app on the run's workspace, shared by the module's tests."""
    with TestClient(create_app(project_run.workspace), base_url=BASE_URL) as client:
        yield client


@pytest.fixture(scope="module")
def url(project_run: ProjectRun) -> str:
    return project_run.api_url


@pytest.fixture(scope="module")
def photo(cars_planes: Path) -> Path:
    """A plane photo of the validation set, which the project never held."""
    return sorted((cars_planes / "val_set" / "planes").glob("*.jpg"))[0]


def test_runs_table_and_run_page_give_the_runs_numbers(client: TestClient, url: str, project_run: ProjectRun):
    saved = json.loads((project_run.run_dir / "metrics.json").read_text())
    [row] = client.get(f"/api/projects/{project_run.project.name}/runs").json()["runs"]
    assert (row["name"], row["accuracy"], row["state"]) == (project_run.run_name, saved["accuracy"], "finished")
    detail = client.get(url).json()
    assert detail["metrics"]["accuracy"] == saved["accuracy"]
    assert detail["metrics"]["per_class"] == saved["per_class"]
    assert detail["confusion"] == saved["confusion_matrix"]
    assert detail["coverage"][-1]["coverage"] == 1.0


def test_a_confusion_cell_and_the_most_wrong(client: TestClient, url: str, project_run: ProjectRun) -> None:
    saved = json.loads((project_run.run_dir / "metrics.json").read_text())
    cell = client.get(f"{url}/images", params={"true": "planes", "predicted": "cars"}).json()["images"]
    assert len(cell) == saved["confusion_matrix"][1][0] > 0
    assert all((image["true"], image["predicted"]) == ("planes", "cars") for image in cell)
    assert all(image["id"].startswith("planes/") for image in cell)
    wrong = client.get(f"{url}/images", params={"wrong": 1, "limit": 1}).json()["images"]
    assert wrong == [max(cell, key=lambda image: image["confidence"])]
    answer = client.get(f"{url}/images")
    assert answer.status_code == 400 and "`true` and `predicted`" in answer.json()["error"]


def test_predict_answers_as_the_library_does(client: TestClient, url: str, project_run, photo: Path) -> None:
    answer = client.post(f"{url}/predict", files={"file": jpeg_upload(photo)})
    assert answer.status_code == 200, answer.text
    expected = imgclf.load(project_run.run_dir).predict(photo)
    body = answer.json()
    assert body["label"] == expected.label and body["unsure"] is False
    assert body["confidence"] == pytest.approx(expected.probability, abs=1e-6)
    assert body["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


def test_predict_and_explain_keep_the_studios_upload_limit(project_run, url: str, photo: Path) -> None:
    app = create_app(project_run.workspace, StudioOptions(max_upload_bytes=photo.stat().st_size - 1))
    with TestClient(app, base_url=BASE_URL) as small:
        for endpoint in ("predict", "explain"):
            answer = small.post(f"{url}/{endpoint}", files={"file": jpeg_upload(photo)})
            assert answer.status_code == 413 and "larger than the limit" in answer.json()["error"]


def test_an_upload_that_is_not_an_image_is_refused_with_the_reason(client: TestClient, url: str) -> None:
    answer = client.post(f"{url}/predict", files={"file": ("notes.txt", b"not a photo at all", "text/plain")})
    assert answer.status_code in (400, 415)
    assert "notes.txt" in answer.json()["error"]
    answer = client.post(f"{url}/explain", files={"file": ("notes.txt", b"not a photo at all", "text/plain")})
    assert answer.status_code in (400, 415) and "notes.txt" in answer.json()["error"]


def shown_size(path: Path, side: int = 512) -> tuple[int, int]:
    """The size of the photo upright, shrunk to at most `side` pixels on its longer side."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((side, side))
        return upright.size


def test_explain_draws_over_an_upload_and_over_a_project_image(client: TestClient, url: str, project_run, photo):
    answer = client.post(f"{url}/explain", files={"file": jpeg_upload(photo)})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size == shown_size(photo)
    image_id = sorted(p.name for p in (project_run.project.data_dir / "cars").iterdir())[0]
    answer = client.post(f"{url}/explain", json={"image": f"cars/{image_id}"})
    assert answer.status_code == 200
    assert Image.open(io.BytesIO(answer.content)).size == shown_size(project_run.project.data_dir / "cars" / image_id)
    answer = client.post(f"{url}/explain", json={"image": "../project.json"})
    assert answer.status_code == 404 and "no image" in answer.json()["error"]
    answer = client.post(f"{url}/explain", content=b"{", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]


def test_export_writes_onnx_and_serves_the_same_files(client: TestClient, url: str, project_run: ProjectRun):
    assert client.get(f"{url}/export/model.onnx").status_code == 404
    answer = client.post(f"{url}/export")
    assert answer.status_code == 200, answer.text
    assert answer.json()["files"] == ["model.onnx", "export.json"]
    folder = project_run.run_dir / "export"
    assert json.loads((folder / "export.json").read_text())["parity"]["passed"] is True
    for name in ("model.onnx", "export.json"):
        download = client.get(f"{url}/export/{name}")
        assert download.status_code == 200 and download.content == (folder / name).read_bytes()
    assert client.get(f"{url}/export/config.json").status_code == 404


def test_the_python_snippet_runs(client: TestClient, url: str, project_run: ProjectRun, photo: Path) -> None:
    snippet = client.get(f"{url}/snippet").json()
    assert snippet["serve"] == f"imgclf serve {project_run.run_dir.resolve()}"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet["python"].replace("photo.jpg", str(photo)), {})
    expected = imgclf.load(project_run.run_dir).predict(photo)
    assert printed.getvalue().split() == [expected.label, str(expected.probability)]


@pytest.mark.parametrize(
    ("run", "status"),
    [("%2E%2E", 400), ("%2E%2E%5Cx", 400), ("..%2Fx", 404), ("%2E%2E%2F%2E%2E%2Fetc", 404)],
)
def test_a_run_name_outside_the_project_is_refused(client: TestClient, project_run, run: str, status: int) -> None:
    """`..` reaches the route and is refused by name; `../x` matches no route at all (the page's files answer
    405 to a POST)."""
    for method, path in (("GET", ""), ("GET", "/snippet"), ("POST", "/export"), ("GET", "/export/model.onnx")):
        answer = client.request(method, f"/api/projects/{project_run.project.name}/runs/{run}{path}")
        no_route = {"GET": (404, "Nothing at"), "POST": (405, "POST is not allowed")}[method]
        expected = (400, "A run name must be") if status == 400 else no_route
        assert (answer.status_code, answer.json()["error"].startswith(expected[1])) == (expected[0], True)
