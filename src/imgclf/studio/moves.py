"""Moving a project's photos to another class or to its quarantine, and undoing such a change.

Each change is one journal of `imgclf fix` (`imgclf.data.journal`) in the project's `journals/`, named
`NNNN-move-YYYYmmdd-HHMMSS.jsonl` (or `-quarantine-`), numbered so that the last change is the one to undo
first. Nothing is overwritten: a name taken at the destination becomes `name-1.jpg`, and the undo refuses,
before moving anything, when a file cannot go back to its place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from imgclf.data.fixes import FixPlan, apply_fixes
from imgclf.data.journal import JournalRecord, Move, free_name, read_journal, undo_moves
from imgclf.studio.projects import QUARANTINE, changing, class_folder, image_id, image_path
from imgclf.studio.workspace import NotFound, Project, StudioError, check_name

_JOURNAL_NAME = re.compile(r"^(\d+)-.*\.jsonl$")


def move_images(project: Project, images: Sequence[str], to: str) -> dict:
    """Move the photos `images` (ids) into the class `to`, or into the quarantine when `to` is "quarantine".

    Every image is checked before anything moves. Returns `{"journal": name, "moved": [{"from", "to"}]}`, the
    ids before and after (`quarantine/CLASS/NAME.jpg` for the quarantine).
    """
    wanted = list(dict.fromkeys(images))
    if not wanted:
        raise StudioError("No image to move. Received: images=[]. Select one or more images.")
    with changing(project):
        moves = _plan(project, wanted, to)
        journal = _new_journal(project, "quarantine" if to == QUARANTINE else "move")
        apply_fixes(FixPlan(project.data_dir, moves), journal)
    moved = [{"from": image, "to": _id_after(project, move.destination)} for image, move in zip(wanted, moves)]
    return {"journal": journal.name, "moved": moved}


def _plan(project: Project, images: list[str], to: str) -> list[Move]:
    target = None if to == QUARANTINE else class_folder(project, to)
    moves: list[Move] = []
    taken: set[Path] = set()
    for row, image in enumerate(images, start=1):
        source = image_path(project, image)
        given, below = image.split("/", 1)
        if given == to:
            raise StudioError(f"{image} is in the class {to!r} already. Received: to={to!r}. Choose another class.")
        folder = project.quarantine_dir / given if target is None else target
        destination = free_name(folder / below, taken)
        project.inside(destination)  # a linked folder on the way would take the photo out of the project
        taken.add(destination)
        moves.append(Move(row, "remove" if target is None else "relabel", source, destination))
    return moves


def _id_after(project: Project, destination: Path) -> str:
    if destination.is_relative_to(project.quarantine_dir):
        return f"{QUARANTINE}/{destination.relative_to(project.quarantine_dir).as_posix()}"
    return image_id(project, destination)


def _journals(project: Project) -> list[tuple[int, Path]]:
    """The project's journals with their numbers, the last change first."""
    if not project.journals_dir.is_dir():
        return []
    numbered = [
        (int(match.group(1)), path)
        for path in project.journals_dir.iterdir()
        if (match := _JOURNAL_NAME.match(path.name))
    ]
    return sorted(numbered, reverse=True)


def _new_journal(project: Project, kind: str) -> Path:
    number = max((number for number, _ in _journals(project)), default=0) + 1
    journal = project.journals_dir / f"{number:04d}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    project.inside(journal)  # a linked journals/ would take the journal out of the workspace
    return journal


def undo_change(project: Project, journal: str | None = None) -> dict:
    """Put back the photos of the journal named `journal`, or of the last change not undone yet.

    Returns `{"restored": [ids]}`, the photos back in the data folder. Raises `StudioError` when there is
    nothing to undo, `FixError` (before anything moves) when a photo cannot go back.
    """
    with changing(project):
        path, record = _named(project, journal) if journal is not None else _last_change(project)
        _check_inside(project, record)
        steps = undo_moves(path)
    return {
        "restored": [image_id(project, step.source) for step in steps if step.source.is_relative_to(project.data_dir)]
    }


def _named(project: Project, journal: str) -> tuple[Path, JournalRecord]:
    path = project.journals_dir / check_name(journal, "journal")
    if not _JOURNAL_NAME.match(journal) or not path.is_file():
        raise NotFound(f"The project {project.name!r} has no journal {journal!r}. Undo the last change instead.")
    return path, read_journal(path)


def _last_change(project: Project) -> tuple[Path, JournalRecord]:
    for _, path in _journals(project):
        record = read_journal(path)
        if set(record.moves) - record.undone:
            return path, record
    raise StudioError(f"Nothing to undo in the project {project.name!r}: every change is undone already.")


def _check_inside(project: Project, record: JournalRecord) -> None:
    """Refuse a journal naming files outside the project (one copied along with the project's folder)."""
    root = project.root.resolve()
    for move in record.moves.values():
        for path in (move.source, move.destination):
            if not Path(path).resolve().is_relative_to(root):
                raise StudioError(
                    f"The journal names {path}, outside the project {project.name!r} (was the project copied?). "
                    "Undo it with imgclf fix --undo where it was made."
                )
