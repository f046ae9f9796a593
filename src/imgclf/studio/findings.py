"""The audit's findings per image, read from a project's `audit/audit.json` (as `imgclf audit` writes it).

A finding is `{"kind", "detail", "suggested"}`: `kind` one of `FINDING_KINDS`, `detail` one line for the user,
`suggested` the class an image probably belongs to (label issues only), else None. Images are named by their id,
the path below the data folder (`cars/a.jpg`); findings about files that have moved since the audit are dropped.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

Finding = dict[str, str | None]

QUALITY_KINDS = {
    "too dark": "dark",
    "too bright": "bright",
    "blurry": "blurry",
    "low information": "low-information",
    "odd aspect ratio": "odd-aspect-ratio",
    "grayscale among colour": "grayscale",
}
FINDING_KINDS = (
    "unreadable",
    "mismatched-extension",
    "tiny",
    "duplicate",
    "near-duplicate",
    "leakage",
    "label-issue",
    "outlier",
    *QUALITY_KINDS.values(),
)
GROUP_MEMBERS_SHOWN = 3


def _finding(kind: str, detail: str, suggested: str | None = None) -> Finding:
    return {"kind": kind, "detail": detail, "suggested": suggested}


def read_findings(audit_json: Path, data_dir: Path) -> dict[str, list[Finding]]:
    """The findings of the audit in `audit_json` per image id of `data_dir`; {} when there is no audit."""
    try:
        facts = os.stat(audit_json)
    except FileNotFoundError:
        return {}
    return _read_findings(str(audit_json), facts.st_mtime_ns, facts.st_size, str(data_dir))


@functools.lru_cache(maxsize=8)
def _read_findings(audit_json: str, mtime_ns: int, size: int, data_dir: str) -> dict[str, list[Finding]]:
    # Cached by the file's time and size: the data view reads it for every page of images.
    audit = json.loads(Path(audit_json).read_text(encoding="utf-8"))
    ids = _Ids(audit.get("splits", {}), data_dir)
    found: dict[str, list[Finding]] = defaultdict(list)

    def add(entry: dict, finding: Finding) -> None:
        image = ids.of(entry)
        if image is not None:
            found[image].append(finding)

    for entry in audit.get("corrupt", []):
        add(entry, _finding("unreadable", f"Cannot be read: {entry['reason']}"))
    for entry in audit.get("mismatched_extension", []):
        add(entry, _finding("mismatched-extension", f"A {entry['format']} file named {entry['extension']}"))
    for entry in audit.get("tiny", []):
        add(entry, _finding("tiny", f"Only {entry['width']}×{entry['height']} pixels"))
    for group in audit.get("duplicates", []) + audit.get("embedding_duplicates", []):
        _add_group(group, ids, add)
    for entry in audit.get("label_issues", []):
        detail = f"Labelled {entry['given']}, looks like {entry['suggested']} (score {entry['score']:.2f})"
        add(entry, _finding("label-issue", detail, entry["suggested"]))
    for entry in audit.get("outliers", []):
        add(entry, _finding("outlier", f"Unlike every other picture (score {entry['score']:.2f})"))
    for entry in audit.get("quality", []):
        for problem in entry["problems"]:
            add(entry, _finding(QUALITY_KINDS.get(problem, problem.replace(" ", "-")), problem.capitalize()))
    return dict(found)


def _add_group(group: dict, ids: _Ids, add: Callable[[dict, Finding], None]) -> None:
    """A duplicate, near-duplicate and leakage finding for each member of a duplicate group."""
    members = group["files"] + group["copies"]
    kind = "duplicate" if group["kind"] == "exact" else "near-duplicate"
    names = [ids.of(member) or f"{member['split']}: {Path(member['path']).name}" for member in members]
    for member, name in zip(members, names):
        others = [other for other in names if other != name]
        shown = ", ".join(others[:GROUP_MEMBERS_SHOWN]) + (" and more" if len(others) > GROUP_MEMBERS_SHOWN else "")
        conflict = f" in other classes ({', '.join(group['classes'])})" if group["label_conflict"] else ""
        add(member, _finding(kind, f"Same picture as {shown}{conflict}"))
        if group["leakage"]:
            add(member, _finding("leakage", f"The same picture is in the splits {', '.join(group['splits'])}"))


class _Ids:
    """Image ids from audit entries: the path below the split that audited the project's data folder (or, after
    the workspace moved, the first split)."""

    def __init__(self, splits: dict[str, dict], data_dir: str):
        roots = {name: os.path.abspath(split["root"]) for name, split in splits.items()}
        matching = [name for name, root in roots.items() if root == os.path.abspath(data_dir)]
        self.split = (matching or list(roots) or [None])[0]
        self.root = roots.get(self.split, data_dir)

    def of(self, entry: dict) -> str | None:
        if entry["split"] != self.split:
            return None
        relative = os.path.relpath(os.path.abspath(entry["path"]), self.root)
        return None if relative.startswith("..") else Path(relative).as_posix()


def audit_summary(audit_json: Path) -> dict | None:
    """What the last audit found in all: `{"problems", "images", "model", "seconds", "warnings", "finished"}`,
    or None when the project has not been audited."""
    try:
        audit = json.loads(audit_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return {
        "problems": audit["problems"],
        "images": audit["statistics"]["images"],
        "model": audit["settings"]["model"],
        "seconds": audit["seconds"],
        "warnings": audit["warnings"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(audit_json.stat().st_mtime)),
    }
