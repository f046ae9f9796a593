"""The studio's job endpoints over HTTP: recipes, a bad option refused up front, and a training's event stream."""

from __future__ import annotations

import json
import multiprocessing
import shutil

import pytest
from fastapi.testclient import TestClient
from tests.studio.conftest import BASE_URL, tree

from imgclf.studio.app import create_app


def read_stream(client: TestClient, job_id: str, headers: dict | None = None) -> tuple[list[int], list[dict]]:
    """The `id:` numbers and the events of a job's event stream, read to its end."""
    numbers, events = [], []
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                numbers.append(int(line.removeprefix("id: ")))
            elif line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return numbers, events


def test_recipes_are_listed_with_their_titles(client):
    recipes = client.get("/api/recipes").json()

    assert [recipe["name"] for recipe in recipes] == ["quick", "better", "cnn", "advanced"]
    assert all(recipe["title"] and recipe["description"] for recipe in recipes)
    assert recipes[1]["options"]["fine_tune"] == "2" and recipes[2]["options"]["model"] == "seed-cnn"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"recipe": "advanced", "options": {"lr": 0}}, "--lr"),
        ({"recipe": "quick", "options": {"learning_rate": 0.1}}, "learning_rate"),
        ({"recipe": "cnn", "options": {"fine_tune": "2"}}, "--fine-tune"),
        ({"recipe": "cnn", "options": {"out": "/tmp/elsewhere"}}, "out"),
        ({"recipe": "advanced", "options": {"track": "mlflow"}}, "track='mlflow'"),  # writes in the working folder
        ({"recipe": "fastest"}, "recipe='fastest'"),
    ],
)
def test_a_bad_option_is_refused_naming_it_before_any_process_starts(client, project, body, named):
    response = client.post("/api/projects/cars-planes/train", json=body)

    assert response.status_code == 400 and named in response.json()["error"]
    assert client.get("/api/jobs").json() == {"jobs": []} and multiprocessing.active_children() == []


def test_missing_projects_runs_and_jobs_are_404(client, project):
    assert client.post("/api/projects/nowhere/train", json={}).status_code == 404
    assert client.post("/api/projects/cars-planes/runs/nothing/resume", json={}).status_code == 404
    assert client.post("/api/jobs/0123/cancel").status_code == 404
    assert client.get("/api/jobs/0123/events").status_code == 404


def test_a_jobs_events_stream_to_its_end_and_resume_after_last_event_id(client, project):
    # A class folder without photos: the job is queued, then its worker fails with the library's one line.
    (project.data_dir / "trucks").mkdir()
    response = client.post("/api/projects/cars-planes/train", json={"recipe": "cnn", "options": {"epochs": 2}})
    assert response.status_code == 202 and response.json()["state"] in ("queued", "running")
    job_id = response.json()["id"]

    numbers, events = read_stream(client, job_id)

    assert numbers == [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [event["type"] for event in events][:2] == ["queued", "started"] and events[-1]["type"] == "error"
    assert events[-1]["message"].startswith("Found no images in the class folder(s)") and events[-1]["run"] is None
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "failed" and job["message"] == events[-1]["message"] and job["project"] == "cars-planes"
    assert client.get("/api/jobs").json()["jobs"] == [job]
    middle = len(events) // 2
    assert read_stream(client, job_id, {"Last-Event-ID": str(numbers[middle])}) == (
        numbers[middle + 1 :],
        events[middle + 1 :],
    )


def test_stopping_the_app_stops_its_running_job(workspace, project):
    app = create_app(workspace)
    with TestClient(app, base_url=BASE_URL) as client:
        body = {"recipe": "cnn", "options": {"epochs": 1000}}
        job = client.post("/api/projects/cars-planes/train", json=body).json()
        assert job["state"] == "running"

    assert app.state.jobs.get(job["id"]).state == "cancelled" and multiprocessing.active_children() == []


def test_a_run_linked_from_outside_the_project_is_not_resumed(client, project, project_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(project_run.run_dir, elsewhere)
    project.runs_dir.mkdir()
    (project.runs_dir / "linked").symlink_to(elsewhere, target_is_directory=True)
    before = tree(elsewhere)

    response = client.post("/api/projects/cars-planes/runs/linked/resume", json={"epochs": 5})

    assert response.status_code == 400 and "leaves the project" in response.json()["error"]
    assert client.get("/api/jobs").json() == {"jobs": []} and tree(elsewhere) == before
