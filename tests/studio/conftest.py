"""Helpers of the studio's tests: a workspace, the app on it, and a project holding real photos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import copy_photos

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


@pytest.fixture
def photos(workspace: Workspace, cars_planes: Path) -> Project:
    """A project `photos` holding 4 real photos of each class (cars, planes)."""
    project = workspace.create_project("photos")
    project.data_dir.rmdir()
    copy_photos(cars_planes / "training_set", project.data_dir, 4)
    return project


def tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` by relative path, with a hash of its bytes."""
    return {
        path.relative_to(folder).as_posix(): hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
