"""The studio's files on disk: a workspace folder of projects, each a data folder and its runs.

    WORKSPACE/
      PROJECT/
        project.json            the project's name and when it was made
        data/CLASS/...          the photos, one sub-folder per class (any imgclf command reads it)
        data.quarantine/...     photos removed from the data, kept (`imgclf fix`'s quarantine)
        journals/               one journal per change of the data, for undo
        audit/                  audit.json, audit.html, label-issues.csv of the last audit
        runs/RUN/               training runs, as `imgclf train --out` writes them

Names of projects and classes come from users: `check_name` keeps them to one safe path component, and
`Project.inside` refuses any path that resolves outside the project, so no request can write elsewhere.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.data.fixes import quarantine_folder
from imgclf.files import write_json

PROJECT_FILE = "project.json"
MAX_NAME_LENGTH = 100
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


class StudioError(ImgclfError):
    """A request the studio cannot carry out; the message says what to do."""


class NotFound(StudioError):
    """A project, class, image, run or job that does not exist."""


def check_name(name: object, what: str) -> str:
    """`name` as a project or class name: one path component a user could type, or a `StudioError` naming it."""
    if not isinstance(name, str) or not name.strip():
        raise StudioError(f"A {what} needs a name. Received: {what}={name!r}.")
    if name != name.strip() or name.startswith(".") or _UNSAFE.search(name) or len(name) > MAX_NAME_LENGTH:
        raise StudioError(
            f"A {what} name must be at most {MAX_NAME_LENGTH} characters without slashes, control characters, "
            f'or any of :*?"<>| and must not start with a dot or a space. Received: {what}={name!r}.'
        )
    return name


@dataclass(frozen=True)
class Project:
    """One project's folders (see the module docstring)."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def quarantine_dir(self) -> Path:
        return quarantine_folder(self.data_dir)

    @property
    def journals_dir(self) -> Path:
        return self.root / "journals"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def classes(self) -> list[str]:
        """The class folders under `data/`, sorted as imgclf sorts them."""
        if not self.data_dir.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(self.data_dir) if entry.is_dir() and entry.name[0] != ".")

    def inside(self, relative: str | Path) -> Path:
        """`relative` under the project, resolved; a `StudioError` if it would leave the project."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StudioError(f"The path leaves the project {self.name!r}. Received: {relative}.")
        return path


class Workspace:
    """A folder of projects; made when missing."""

    def __init__(self, root: str | Path):
        self.root = Path(os.path.abspath(root))
        self.root.mkdir(parents=True, exist_ok=True)

    def projects(self) -> list[Project]:
        """Every project of the workspace, by name."""
        return sorted(
            (
                Project(Path(entry.path))
                for entry in os.scandir(self.root)
                if (Path(entry.path) / PROJECT_FILE).is_file()
            ),
            key=lambda project: project.name.lower(),
        )

    def project(self, name: str) -> Project:
        """The project called `name`, or `NotFound`."""
        project = Project(self.root / check_name(name, "project"))
        if not (project.root / PROJECT_FILE).is_file():
            raise NotFound(f"There is no project {name!r} in {self.root}. Create it first.")
        return project

    def create_project(self, name: str) -> Project:
        """A new, empty project called `name`; a `StudioError` if one exists."""
        project = Project(self.root / check_name(name, "project"))
        if project.root.exists():
            raise StudioError(f"{project.root} already exists. Received: project={name!r}. Choose another name.")
        project.data_dir.mkdir(parents=True)
        write_json(project.root / PROJECT_FILE, {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return project
