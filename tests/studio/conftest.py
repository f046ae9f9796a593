"""Helpers of the studio's tests: a workspace, the app on it, a project holding real photos, and a short seed-cnn
run trained on a project's data folder as the studio trains."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import copy_photos, label_wide_photos, make_flat_photos

import imgclf
from imgclf.studio.app import create_app
from imgclf.studio.workspace import Project, Workspace

BASE_URL = "http://127.0.0.1:8765"


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")


@pytest.fixture
def client(workspace: Workspace) -> TestClient:
    """The studio's app on `workspace`, reached as a browser reaches it on 127.0.0.1:8765."""
    with TestClient(create_app(workspace), base_url=BASE_URL) as client:
        yield client


def project_of_photos(workspace: Workspace, name: str, source: Path, per_class: int) -> Project:
    """A new project `name` holding the first `per_class` photos of each class folder of `source`."""
    project = workspace.create_project(name)
    project.data_dir.rmdir()
    copy_photos(source, project.data_dir, per_class)
    return project


@pytest.fixture
def photos(workspace: Workspace, cars_planes: Path) -> Project:
    """A project `photos` holding 4 real photos of each class (cars, planes)."""
    return project_of_photos(workspace, "photos", cars_planes / "training_set", 4)


@pytest.fixture
def project(workspace: Workspace, cars_planes: Path) -> Project:
    """A project `cars-planes` holding 15 real photos of each class: enough to train on, a fifth held out."""
    return project_of_photos(workspace, "cars-planes", cars_planes / "training_set", 15)


def tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` by relative path, with a hash of its bytes."""
    return {
        path.relative_to(folder).as_posix(): hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass(frozen=True)
class ProjectRun:
    """A workspace, one of its projects and the name of the run trained on the project's data."""

    workspace: Workspace
    project: Project
    run_name: str

    @property
    def run_dir(self) -> Path:
        return self.project.runs_dir / self.run_name

    @property
    def api_url(self) -> str:
        """The path of the run in the studio's API."""
        return f"/api/projects/{self.project.name}/runs/{self.run_name}"


def jpeg_upload(photo: Path) -> tuple[str, bytes, str]:
    """`photo` as a multipart file field, as the studio's page sends it."""
    return photo.name, photo.read_bytes(), "image/jpeg"


@pytest.fixture(scope="session")
def project_run(tmp_path_factory: pytest.TempPathFactory, cars_planes: Path) -> ProjectRun:
    """seed-cnn trained as the studio trains (`--out project/runs/NAME`) on 30 photos per class, a quarter kept
    for validation: a few of them classified wrong, so the confusion matrix has images off its diagonal."""
    workspace = Workspace(tmp_path_factory.mktemp("workspace"))
    project = workspace.create_project("cars-planes")
    copy_photos(cars_planes / "training_set", project.data_dir, 30)
    run_name = "seed-cnn-20261203-120000"
    imgclf.train(
        project.data_dir,
        model="seed-cnn",
        val_split=0.25,
        augment="seed",
        epochs=3,
        seed=0,
        out=str(project.runs_dir / run_name),
        progress=False,
    )
    return ProjectRun(workspace, project, run_name)


@pytest.fixture(scope="session")
def multi_label_project_run(tmp_path_factory: pytest.TempPathFactory, cars_planes: Path) -> ProjectRun:
    """A project `outfits` whose data folder holds `flat_photos` and their labels CSV (cars or planes, and `wide`
    when the photo is), with seed-cnn trained on it multi-label as `multi_label_run` is (the studio does not
    train from a CSV: this run was trained outside it, into the project's runs/)."""
    workspace = Workspace(tmp_path_factory.mktemp("workspace"))
    project = workspace.create_project("outfits")
    project.data_dir.rmdir()
    labels = label_wide_photos(make_flat_photos(project.data_dir, cars_planes))
    run_name = "seed-cnn-20261203-150000"
    out = str(project.runs_dir / run_name)
    imgclf.train(labels=labels, model="seed-cnn", resize="pad", epochs=4, seed=0, out=out, progress=False)
    return ProjectRun(workspace, project, run_name)
