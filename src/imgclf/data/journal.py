"""Moving the user's files without ever overwriting or losing one, in a journal that puts every move back.

A journal is JSON lines, appended and fsynced one line at a time: a header, then for each move a `move` line
written before the file moves and a `moved` line after it has (and after the folders holding it are synced),
and a `folder` line before each folder a fix creates. An interrupted fix therefore leaves each file in one of
three states the journal describes, and `undo_moves` puts every file back from any of them:

    {"journal": "imgclf-fix/1", "data": "/photos/training_set", "issues": "/audit/label-issues.csv"}
    {"folder": "/photos/training_set.quarantine"}
    {"move": 1, "row": 3, "action": "remove", "from": "/photos/training_set/cars/a.jpg", "to": "..."}
    {"moved": 1}
    {"undone": 1}                                                       (written by the undo)

A file is moved by a hard link to its new name (which fails, rather than replace, when the name is taken) and
the removal of its old name; where links cannot be made (another file system) its bytes are copied into a new
file opened exclusively, synced, then the old name is removed. Nothing is deleted: the undo removes only a
second name of a file that is still at its first place, and folders a fix created once they are empty.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.files import interrupts_held

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "imgclf-fix/1"
_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


class FixError(ImgclfError):
    """An issues file, a journal or a move that imgclf refuses to act on, said in one line."""


@dataclass(frozen=True)
class Move:
    """One file to move: `row` of the issues file asked to `action` it (`relabel` or `remove`)."""

    row: int
    action: str
    source: Path
    destination: Path


@dataclass(frozen=True)
class UndoStep:
    """What the undo does for a move: `put back` (destination to source), or `drop` the second name left at the
    destination by an interrupted move while the file is still at its source."""

    number: int
    kind: str
    source: Path
    destination: Path


def free_name(path: Path, taken: Collection[Path] = frozenset()) -> Path:
    """`path`, or `name-1.ext`, `name-2.ext`, ... beside it: the first that neither exists nor is in `taken`."""
    candidate, number = path, 0
    while candidate in taken or candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def move_without_overwrite(source: Path, destination: Path) -> None:
    """Move the file `source` to `destination`, which must not exist; raises `FileExistsError` when it does."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        _copy_exclusive(source, destination)
    _sync_folder(destination.parent)
    source.unlink()
    _sync_folder(source.parent)


def _copy_exclusive(source: Path, destination: Path) -> None:
    with open(source, "rb") as reading, open(destination, "xb") as writing:
        shutil.copyfileobj(reading, writing)
        writing.flush()
        os.fsync(writing.fileno())
    shutil.copystat(source, destination)


def _sync_folder(folder: Path) -> None:
    """Make a folder's new or removed names durable (POSIX); where folders cannot be opened, skip it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse to sync a folder; the journal still says what to check
    finally:
        os.close(handle)


class Journal:
    """An append-only journal file; each `write` is on disk when it returns. Use `create` or `reopen`."""

    def __init__(self, path: Path, mode: str):
        self.path = path
        self._file = open(path, mode, encoding="utf-8")  # noqa: SIM115 (closed by `close`)

    @classmethod
    def create(cls, path: Path, header: dict[str, object]) -> Journal:
        """A new journal at `path` (never over another file), its header written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, "x")
        journal.write({"journal": JOURNAL_FORMAT, **header})
        return journal

    @classmethod
    def reopen(cls, path: Path) -> Journal:
        """The journal at `path`, to append to (after a line a crash cut short, on a line of its own)."""
        with open(path, "rb") as file:
            cut_short = file.seek(0, os.SEEK_END) > 0 and file.seek(-1, os.SEEK_END) >= 0 and file.read(1) != b"\n"
        journal = cls(path, "a")
        if cut_short:
            journal._file.write("\n")
        return journal

    def write(self, entry: dict[str, object]) -> None:
        """Append `entry` as one JSON line and wait until it is on disk."""
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


def make_folders(journal: Journal, folder: Path) -> None:
    """Create `folder` and its missing parents, each journaled before it is made, so the undo can remove them."""
    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    for parent in reversed(missing):
        journal.write({"folder": str(parent)})
        parent.mkdir()


def journaled_moves(journal: Journal, moves: Sequence[Move]) -> None:
    """Make `moves` in order, each between its `move` and `moved` journal lines; Ctrl-C waits for the move."""
    for number, move in enumerate(moves, start=1):
        with interrupts_held():
            make_folders(journal, move.destination.parent)
            journal.write(
                {
                    "move": number,
                    "row": move.row,
                    "action": move.action,
                    "from": str(move.source),
                    "to": str(move.destination),
                }
            )
            try:
                move_without_overwrite(move.source, move.destination)
            except FileExistsError:
                raise FixError(
                    f"{move.destination} appeared while fixing, so {move.source} was not moved there (nothing is "
                    f"overwritten). Undo the moves so far with imgclf fix --undo {journal.path}, then fix again."
                ) from None
            journal.write({"moved": number})


@dataclass
class JournalRecord:
    """What a journal says: its header, the moves begun (by number), those undone, and the folders the fix made.

    Whether a begun move ended is read from the files themselves (`plan_undo`), not from its `moved` line.
    """

    header: dict[str, object]
    moves: dict[int, Move]
    undone: set[int]
    folders: list[Path]


def read_journal(path: str | Path) -> JournalRecord:
    """Parse a fix's journal; a last line cut short by a crash is ignored. Raises `FixError` for another file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FixError(f"Journal {path} does not exist. Give the .jsonl file `imgclf fix` named.") from None
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("journal") != JOURNAL_FORMAT:
        raise FixError(f"{path} is not a journal of `imgclf fix` (its first line names no {JOURNAL_FORMAT}).")
    record = JournalRecord(header, {}, set(), [])
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):
                raise FixError(f"Journal {path} line {number} is not JSON; the journal is damaged.") from None
            continue
        if "move" in entry:
            source, destination = Path(entry["from"]), Path(entry["to"])
            record.moves[entry["move"]] = Move(entry["row"], entry["action"], source, destination)
        elif "undone" in entry:
            record.undone.add(entry["undone"])
        elif "folder" in entry:
            record.folders.append(Path(entry["folder"]))
    return record


def plan_undo(record: JournalRecord) -> list[UndoStep]:
    """What putting every journaled file back takes, last move first.

    Raises `FixError`, before anything moves, naming the first file that cannot go back: its place holds another
    file, or it is nowhere.
    """
    steps, refusals = [], []
    for number in sorted(set(record.moves) - record.undone, reverse=True):
        move = record.moves[number]
        at_source, at_destination = _exists(move.source), _exists(move.destination)
        if at_destination and not at_source:
            steps.append(UndoStep(number, "put back", move.source, move.destination))
        elif at_destination and _same_file(move.source, move.destination):
            steps.append(UndoStep(number, "drop", move.source, move.destination))
        elif at_destination:
            refusals.append(
                f"Cannot undo the move of {move.source} to {move.destination}: both exist and differ (nothing is "
                f"overwritten or deleted). Keep the right file at {move.source}, move the other away, then undo again."
            )
        elif not at_source:
            refusals.append(f"Cannot put {move.source} back: it is neither there nor at {move.destination}.")
    if refusals:
        more = f" ({len(refusals) - 1} more files cannot go back.)" if len(refusals) > 1 else ""
        raise FixError(refusals[0] + more)
    return steps


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _same_file(first: Path, second: Path) -> bool:
    """Two names of one file (a link left by an interrupted move), or a finished copy of it (another file system)."""
    if os.path.samefile(first, second):
        return True
    if first.stat().st_size != second.stat().st_size:
        return False
    with open(first, "rb") as one, open(second, "rb") as other:
        while block := one.read(1 << 20):
            if block != other.read(len(block)):
                return False
    return True


def undo_moves(path: str | Path) -> list[UndoStep]:
    """Put back every file the journal at `path` moved, then remove the folders the fix made that are empty.

    Checks every file first (`plan_undo`); each step is journaled as `undone`, so an undo that is interrupted
    can be run again. Returns the steps taken.
    """
    record = read_journal(path)
    steps = plan_undo(record)
    with Journal.reopen(Path(path)) as journal:
        for step in steps:
            with interrupts_held():
                if step.kind == "put back":
                    step.source.parent.mkdir(parents=True, exist_ok=True)
                    move_without_overwrite(step.destination, step.source)
                else:
                    step.destination.unlink()
                    _sync_folder(step.destination.parent)
                journal.write({"undone": step.number})
    _remove_empty_folders(record.folders)
    return steps


def _remove_empty_folders(folders: Sequence[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            log.warning("Left %s in place: it holds files the fix did not put there.", folder)
