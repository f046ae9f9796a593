"""The runs endpoints on a multi-label run (trained on a labels CSV into a studio project): its page, its
mistakes, Test's answer with each label's threshold, Grad-CAM per label, export and the snippet."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.studio.conftest import BASE_URL, ProjectRun, jpeg_upload

import imgclf
from imgclf.evaluation.explain import explain_image
from imgclf.serve.service import EXPLAIN_SIDE
from imgclf.studio.app import create_app


@pytest.fixture(scope="module")
def client(multi_label_project_run: ProjectRun) -> TestClient:
    with TestClient(create_app(multi_label_project_run.workspace), base_url=BASE_URL) as client:
        yield client


@pytest.fixture(scope="module")
def url(multi_label_project_run: ProjectRun) -> str:
    return multi_label_project_run.api_url


@pytest.fixture(scope="module")
def photo(multi_label_project_run: ProjectRun) -> Path:
    return sorted(multi_label_project_run.project.data_dir.glob("plane_*.jpg"))[0]


def upload(photo: Path) -> dict:
    return {"file": jpeg_upload(photo)}


def test_the_runs_table_and_page_give_the_labels_scores_and_thresholds(client, url, multi_label_project_run):
    saved = json.loads((multi_label_project_run.run_dir / "metrics.json").read_text())
    thresholds = json.loads((multi_label_project_run.run_dir / "thresholds.json").read_text())

    [row] = client.get("/api/projects/outfits/runs").json()["runs"]
    detail = client.get(url)

    assert row["multi_label"] is True and row["mean_average_precision"] == saved["mean_average_precision"]
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["multi_label"] is True and body["thresholds"] == thresholds
    assert body["metrics"]["per_class"] == saved["per_class"] and body["classes"] == ["cars", "planes", "wide"]
    assert (body["confusion"], body["calibration"], body["coverage"]) == (None, None, [])


def test_the_mistakes_are_the_photos_whose_labels_are_wrong(client, url, multi_label_project_run):
    with (multi_label_project_run.run_dir / "predictions.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    expected = {Path(row["file"]).name for row in rows if row["true_labels"] != row["predicted_labels"]}

    wrong = client.get(f"{url}/images", params={"wrong": 1}).json()["images"]

    assert {image["name"] for image in wrong} == expected and expected
    assert all(image["id"] is None for image in wrong)  # in data/ itself, not in a class folder: no thumbnail
    assert [image["confidence"] for image in wrong] == sorted((image["confidence"] for image in wrong), reverse=True)
    cell = client.get(f"{url}/images", params={"true": "cars", "predicted": "planes"})
    assert cell.status_code == 400 and "no confusion matrix" in cell.json()["error"]


def test_predict_answers_with_the_labels_and_each_labels_threshold(client, url, multi_label_project_run, photo):
    run = imgclf.load(multi_label_project_run.run_dir)
    expected = run.predict(photo)

    body = client.post(f"{url}/predict", files=upload(photo)).json()

    assert body["labels"] == expected.labels and body["label"] == expected.label and body["unsure"] is False
    assert body["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert body["thresholds"] == dict(zip(run.class_names, run.thresholds))


def test_explain_draws_the_label_asked_for(client, url, multi_label_project_run, photo):
    run = imgclf.load(multi_label_project_run.run_dir)
    labels = ("cars", "planes")
    library = {
        label: np.asarray(explain_image(run, photo, label, max_side=EXPLAIN_SIDE).overlay, int) for label in labels
    }

    drawn = {}
    for label in labels:
        answer = client.post(f"{url}/explain", params={"label": label}, files=upload(photo))
        assert answer.status_code == 200, answer.text
        drawn[label] = np.asarray(Image.open(io.BytesIO(answer.content)), int)

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    # The studio's model thread computes with one thread, so the last digits may differ from the library's here.
    assert distance(drawn["cars"], library["cars"]) < distance(drawn["cars"], library["planes"])
    assert distance(drawn["planes"], library["planes"]) < distance(drawn["planes"], library["cars"])
    answer = client.post(f"{url}/explain", params={"label": "hats"}, json={"image": photo.name})
    assert answer.status_code == 400 and "no class 'hats'" in answer.json()["error"]


def test_export_and_the_snippet_of_a_multi_label_run(client, url, multi_label_project_run):
    answer = client.post(f"{url}/export")
    assert answer.status_code == 200, answer.text
    exported = json.loads((multi_label_project_run.run_dir / "export" / "export.json").read_text())
    assert exported["multi_label"] is True and sorted(exported["thresholds"]) == ["cars", "planes", "wide"]
    assert "print(prediction.labels, prediction.probabilities)" in client.get(f"{url}/snippet").json()["python"]
