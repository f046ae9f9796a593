"""The workspace's folders: project and class names are one safe path component, and paths stay in the project."""

from __future__ import annotations

import pytest

from imgclf.studio.workspace import NotFound, StudioError, Workspace, check_name


@pytest.mark.parametrize(
    "name",
    ["../x", "..", "a/b", "a\\b", ".hidden", "a\x00b", "line\nbreak", "tab\there", " padded", "<b>", "x" * 101, ""],
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(StudioError, match="Received: project="):
        check_name(name, "project")


@pytest.mark.parametrize("name", ["cars", "My cats 2", "voitures é", "a.b-c_d"])
def test_ordinary_names_are_kept(name):
    assert check_name(name, "class") == name


def test_a_project_is_made_once_and_found_by_name(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    project = workspace.create_project("birds")
    assert project.data_dir.is_dir() and workspace.project("birds") == project
    assert [p.name for p in workspace.projects()] == ["birds"]
    with pytest.raises(StudioError, match="already exists"):
        workspace.create_project("birds")
    with pytest.raises(NotFound):
        workspace.project("fish")


@pytest.mark.parametrize("relative", ["../elsewhere", "data/../../x", "/etc/passwd", "link/secret.txt"])
def test_inside_refuses_paths_that_leave_the_project(tmp_path, relative):
    project = Workspace(tmp_path / "ws").create_project("birds")
    (tmp_path / "outside").mkdir()
    (project.root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StudioError, match="leaves the project"):
        project.inside(relative)


def test_inside_keeps_paths_in_the_project(tmp_path):
    project = Workspace(tmp_path / "ws").create_project("birds")
    assert project.inside("data/cars/../planes/a.jpg") == (project.data_dir / "planes" / "a.jpg").resolve()
