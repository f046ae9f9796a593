"""Applying the label fixes a user chose in an audit's `label-issues.csv`, reversibly: it only moves their files.

    imgclf fix audit-training_set/label-issues.csv --data photos/training_set --dry-run    # print the moves
    imgclf fix audit-training_set/label-issues.csv --data photos/training_set              # make them
    imgclf fix --undo audit-training_set/label-issues.fix-20250101-120000.jsonl            # put all back

The file has the columns `file,given,suggested,score,action`; `file` is relative to DATA (`cars/a.jpg`) or an
absolute path inside it. A `relabel` row moves the file to the class folder `suggested` (keeping any sub-folders
below the class), a `remove` row to the quarantine folder `DATA.quarantine/<given>/...` beside DATA (never
inside it, so training never sees it), a `keep` row leaves it. Every row is checked before anything moves;
names taken at the destination get `-1`, `-2`, ... and nothing is overwritten or deleted. The moves are made in
a journal (`journal.py`) beside the issues file, which `undo_moves` reads to put everything back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgclf.data.csv_rows import is_blank, read_csv_rows
from imgclf.data.folders import find_classes
from imgclf.data.journal import FixError, Journal, Move, free_name, journaled_moves

ISSUE_COLUMNS = ("file", "given", "suggested", "score", "action")
ACTIONS = ("relabel", "remove", "keep")
QUARANTINE_SUFFIX = ".quarantine"


@dataclass
class FixPlan:
    """The moves a checked issues file asks for, and what else it says."""

    data: Path
    moves: list[Move]
    kept: int = 0
    new_classes: list[str] = field(default_factory=list)

    @property
    def quarantine(self) -> Path:
        """Where removed files go: `DATA.quarantine`, beside DATA."""
        return quarantine_folder(self.data)


def quarantine_folder(data: str | Path) -> Path:
    """`DATA.quarantine`, the sibling of DATA that removed files are moved into."""
    data = Path(os.path.abspath(data))
    return data.with_name(data.name + QUARANTINE_SUFFIX)


@dataclass(frozen=True)
class IssueRow:
    """One row of an issues file, `number` counting the header as row 1 (as a spreadsheet shows it)."""

    issues: Path
    number: int
    file: str
    given: str
    suggested: str
    score: str
    action: str

    def error(self, what: str, received: str, advice: str) -> FixError:
        """A `FixError` naming this row: what is wrong, `Received: ...`, what to do."""
        return FixError(f"{self.issues} row {self.number}: {what}. Received: {received}. {advice}")


def read_issues(path: str | Path) -> list[IssueRow]:
    """The rows of an issues file, blank rows skipped; raises `FixError` when it is not UTF-8 CSV text or its
    columns are not the expected."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FixError(
            f"Issues file {path} does not exist or is not a file. Give the label-issues.csv `imgclf audit` wrote."
        ) from None
    header, *records = read_csv_rows(data, path, FixError) or [[]]
    rows = [(number, values) for number, values in enumerate(records, start=2) if not is_blank(values)]
    if tuple(header) != ISSUE_COLUMNS:
        raise FixError(
            f"{path} has the columns {','.join(header) or '(none)'}; expected {','.join(ISSUE_COLUMNS)}, "
            "as `imgclf audit` writes label-issues.csv."
        )
    for number, values in rows:
        if len(values) != len(ISSUE_COLUMNS):
            raise FixError(f"{path} row {number} has {len(values)} values; expected {len(ISSUE_COLUMNS)}.")
    # Only the action is stripped: a spreadsheet may pad it, while a file or class name is taken as it is.
    return [IssueRow(path, number, *values[:4], values[4].strip()) for number, values in rows]


def _check_class_name(row: IssueRow, column: str) -> None:
    name = getattr(row, column)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise row.error(
            f"{column} is not a class folder name",
            f"{column}={name!r}",
            "Give the name of a folder directly inside DATA, without slashes (and not hidden).",
        )


def _check_action(row: IssueRow) -> None:
    if row.action not in ACTIONS:
        raise row.error("unknown action", f"action={row.action!r}", f"Use one of {', '.join(ACTIONS)}.")


def _source_of(row: IssueRow, data: Path, classes: Sequence[str]) -> Path:
    """The file a row names, checked: inside DATA without `..`, in the class folder `given`, present."""
    received = f"file={row.file!r}"
    if not row.file or ".." in Path(row.file).parts:
        raise row.error("the file path is empty or climbs out with '..'", received, "Name a file inside DATA.")
    source = data / row.file  # an absolute `file` replaces `data`
    if not source.is_relative_to(data):
        raise row.error(f"the file is outside the data root {data}", received, "Name a file inside DATA.")
    _check_class_name(row, "given")
    if row.given not in classes:
        raise row.error(f"{data} has no class {row.given!r}", f"given={row.given!r}", f"Classes: {list(classes)}.")
    relative = source.relative_to(data)
    if len(relative.parts) < 2 or relative.parts[0] != row.given:
        raise row.error(f"the file is not in the class folder {row.given!r}", received, "Check the given column.")
    if not source.is_file():
        raise row.error("the file does not exist", received, "Was it moved, or fixed already? Remove the row.")
    return source


def _check_relabel(row: IssueRow, plan: FixPlan, classes: Sequence[str], create_classes: bool) -> None:
    """A relabel row names another class, one with a folder unless `create_classes` (then noted as new)."""
    _check_class_name(row, "suggested")
    received = f"suggested={row.suggested!r}"
    if row.suggested == row.given:
        raise row.error("relabel to the class the file already has", received, "Use keep, or name another class.")
    if row.suggested not in classes and row.suggested not in plan.new_classes:
        if not create_classes:
            raise row.error(
                f"{plan.data} has no class folder {row.suggested!r}",
                received,
                f"Classes: {list(classes)}. Add --create-classes to create it.",
            )
        plan.new_classes.append(row.suggested)


def plan_fixes(issues: str | Path, data: str | Path, create_classes: bool = False) -> FixPlan:
    """Check every row of the issues file against DATA, and return the moves they ask for; moves nothing.

    Args:
        issues: a `label-issues.csv` with the columns `file,given,suggested,score,action`.
        data: the data folder the rows' files are in, `DATA/<class>/...`.
        create_classes: let `relabel` rows name a class that has no folder yet (it is created); otherwise
            such a row is an error.

    Raises `FixError` naming the first bad row: an unknown action, a missing file, a file outside DATA or
    climbing out of it with `..`, a class name with a slash, a file named twice.
    """
    data = Path(os.path.abspath(data))
    if not data.is_dir():
        raise FixError(f"Data folder {data} does not exist or is not a folder. Received: --data={data}.")
    classes = find_classes(data)
    plan = FixPlan(data, [])
    rows_of: dict[Path, int] = {}
    destinations: set[Path] = set()
    for row in read_issues(issues):
        _check_action(row)
        source = _source_of(row, data, classes)
        if source in rows_of:
            raise row.error(f"the file is also in row {rows_of[source]}", f"file={row.file!r}", "Keep one row.")
        rows_of[source] = row.number
        if row.action == "keep":
            plan.kept += 1
            continue
        if row.action == "relabel":
            _check_relabel(row, plan, classes, create_classes)
        below_class = source.relative_to(data / row.given)
        folder = data / row.suggested if row.action == "relabel" else plan.quarantine / row.given
        destination = free_name(folder / below_class, destinations)
        destinations.add(destination)
        plan.moves.append(Move(row.number, row.action, source, destination))
    return plan


def journal_path(issues: str | Path) -> Path:
    """A new journal's path beside the issues file: `label-issues.fix-YYYYmmdd-HHMMSS.jsonl` (or `-1`, ...)."""
    issues = Path(issues)
    return free_name(issues.with_name(f"{issues.stem}.fix-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"))


def apply_fixes(plan: FixPlan, journal: str | Path, issues: str | Path | None = None) -> Path:
    """Make the plan's moves, journaled in the new file `journal` so that `undo_moves(journal)` puts them back.

    Returns the journal's path. An interrupted fix (Ctrl-C waits for the move under way) is undone the same way.
    """
    header = {
        "data": str(plan.data),
        "issues": None if issues is None else os.path.abspath(issues),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with Journal.create(Path(journal), header) as record:
        journaled_moves(record, plan.moves)
    return Path(journal)
