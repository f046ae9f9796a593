"""A studio workspace with a project of real photos and a short seed-cnn run trained on its data folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import copy_photos

import imgclf
from imgclf.studio.workspace import Project, Workspace


@dataclass(frozen=True)
class ProjectRun:
    """A workspace, its project `cars-planes` and the name of the run trained on the project's data."""

    workspace: Workspace
    project: Project
    run_name: str

    @property
    def run_dir(self) -> Path:
        return self.project.runs_dir / self.run_name


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
