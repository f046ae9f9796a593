"""The loaded runs: kept while used, loaded again when training writes new weights, a few at most."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.studio.conftest import ProjectRun

from imgclf.studio.run_cache import RunCache
from imgclf.studio.workspace import NotFound, Project, StudioError, Workspace


@pytest.fixture
def project(project_run: ProjectRun, tmp_path: Path) -> Project:
    """A project of its own holding two copies of the trained run, `a` and `b`."""
    project = Workspace(tmp_path).create_project("p")
    for name in ("a", "b"):
        shutil.copytree(project_run.run_dir, project.runs_dir / name)
    return project


def test_a_run_stays_loaded(project: Project) -> None:
    runs = RunCache()
    run = runs.get(project, "a")
    assert runs.get(project, "a") is run
    assert run.run_dir == project.runs_dir.resolve() / "a"


def test_new_weights_are_loaded(project: Project) -> None:
    runs = RunCache()
    before = runs.get(project, "a")
    weights = project.runs_dir / "a" / "model.safetensors"
    save_file({name: tensor + 0.01 for name, tensor in load_file(weights).items()}, weights)  # a resumed training
    later = os.stat(weights).st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    after = runs.get(project, "a")
    assert after is not before
    photos = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    size = before.preprocessing.image_size
    photos = torch.nn.functional.interpolate(photos.float(), size=(size, size)).to(torch.uint8)
    assert not torch.equal(before.predict_tensors(photos), after.predict_tensors(photos))


def test_calls_run_on_the_model_thread_with_one_torch_thread(project: Project) -> None:
    runs, before = RunCache(), torch.get_num_threads()
    seen = asyncio.run(runs.call(project, "a", lambda run: (run, threading.current_thread(), torch.get_num_threads())))
    runs.close()
    assert seen[0] is runs.get(project, "a")
    assert seen[1] is not threading.main_thread() and seen[1].name.startswith("imgclf-studio-model")
    assert seen[2] == 1 and torch.get_num_threads() == before, "only the model thread's calls use one thread"


def test_only_the_last_runs_used_stay_loaded(project: Project) -> None:
    runs = RunCache(size=1)
    first = runs.get(project, "a")
    runs.get(project, "b")
    assert runs.get(project, "a") is not first


def test_a_run_without_weights_or_config_is_named(project: Project) -> None:
    (project.runs_dir / "a" / "model.safetensors").unlink()
    with pytest.raises(StudioError, match="'a' has no model.safetensors yet"):
        RunCache().get(project, "a")
    with pytest.raises(NotFound, match="no run 'c'"):
        RunCache().get(project, "c")
