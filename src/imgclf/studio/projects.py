"""What the studio does with a project's photos: count, list with the audit's findings, add, import, move, undo.

Every change happens under the project's lock, only inside the project, and never overwrites or deletes a file:
photos added get a free name, moves to another class or to the quarantine (`data.quarantine/CLASS/...`) go
through `imgclf fix`'s journal (`moves.py`), so each change can be undone, the last one first.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from imgclf.config import Preprocessing
from imgclf.data.folders import DatasetError, FolderIndex, index_folder
from imgclf.data.images import IMAGE_EXTENSIONS, UPLOAD_FORMATS, ImageError, is_image_file
from imgclf.data.journal import free_name
from imgclf.serve.options import ServeOptions
from imgclf.serve.uploads import Upload, decode_upload
from imgclf.studio.findings import FINDING_KINDS, read_findings
from imgclf.studio.workspace import NotFound, Project, StudioError, Workspace, check_name

QUARANTINE = "quarantine"
"""The `to` of a move that takes images out of the data, into the project's quarantine."""
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}
MAX_STEM_LENGTH = 80
_UNSAFE_IN_NAMES = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_CHECK_SIZE = Preprocessing(image_size=32)  # decoding an upload to check it: JPEGs draft to 1/8 of their size

_locks: dict[Path, threading.Lock] = {}
_making_locks = threading.Lock()


def changing(project: Project) -> threading.Lock:
    """The lock every change of `project`'s files holds, so that two requests never move the same file."""
    with _making_locks:
        return _locks.setdefault(project.root, threading.Lock())


def _index(project: Project) -> FolderIndex | None:
    """The project's data folder indexed as imgclf indexes it; None while it has no photo."""
    try:
        return index_folder(project.data_dir)
    except DatasetError:
        return None


def image_id(project: Project, path: str | Path) -> str:
    """The id of the photo at `path`: its path below the data folder, `CLASS/.../NAME.jpg`."""
    return Path(path).relative_to(project.data_dir).as_posix()


def image_path(project: Project, image: str) -> Path:
    """The photo with the id `image`; `NotFound` unless it is an image file in a class folder of the project."""
    parts = image.split("/")
    if len(parts) < 2 or any(part in ("", ".", "..") for part in parts):
        raise StudioError(f"An image id is CLASS/NAME below the project's data folder. Received: image={image!r}.")
    path = project.inside(Path("data") / image)
    if not is_image_file(path) or not path.is_file() or Path(image).parts[0].startswith("."):
        raise NotFound(f"The project {project.name!r} has no image {image!r}. Reload the images.")
    return project.data_dir / image


def summary(project: Project) -> dict:
    """The project as the studio lists it: `{"name", "classes": [{"name", "count"}], "images", "runs",
    "audited"}`."""
    index = _index(project)
    counts = dict(zip(index.class_names, index.class_counts())) if index else {}
    runs = [entry for entry in _entries(project.runs_dir) if entry.is_dir() and not entry.name.startswith(".")]
    return {
        "name": project.name,
        "classes": [{"name": name, "count": counts.get(name, 0)} for name in project.classes()],
        "images": sum(counts.values()),
        "runs": len(runs),
        "audited": (project.audit_dir / "audit.json").is_file(),
    }


def _entries(folder: Path) -> list[os.DirEntry]:
    return list(os.scandir(folder)) if folder.is_dir() else []


def class_folder(project: Project, name: str) -> Path:
    """The folder of the class `name`; `NotFound` when the project has no such class, `StudioError` when it is a
    link to a folder outside the project (photos added or moved there would leave the workspace)."""
    folder = project.data_dir / check_name(name, "class")
    project.inside(folder)
    if not folder.is_dir():
        raise NotFound(f"The project {project.name!r} has no class {name!r}. Classes: {project.classes()}.")
    return folder


def create_class(project: Project, name: str) -> None:
    """Add the empty class folder `name`; a `StudioError` when it exists or is named like the quarantine."""
    folder = project.data_dir / check_name(name, "class")
    if name.lower() == QUARANTINE:
        raise StudioError(f"{QUARANTINE!r} is where removed photos go, not a class name. Received: class={name!r}.")
    with changing(project):
        if folder.exists():
            raise StudioError(f"The project {project.name!r} has a class {name!r} already. Choose another name.")
        folder.mkdir(parents=True)


def add_photos(project: Project, class_name: str, uploads: Sequence[Upload], limits: ServeOptions) -> dict:
    """Save each upload that is an image within `limits` into the class folder, under a safe free name.

    Returns `{"added": [image ids], "skipped": [{"file", "reason"}]}`; an upload is skipped when it is over the
    size or pixel limit, or not an image of a format imgclf reads (decoded as `imgclf serve` decodes uploads).
    """
    folder = class_folder(project, class_name)
    added, skipped = [], []
    for name, data in uploads:
        checked = decode_upload(data, name, _CHECK_SIZE, limits)
        if isinstance(checked, ImageError):
            skipped.append({"file": name, "reason": checked.reason})
            continue
        with changing(project):
            path = _save_new_file(folder / safe_file_name(name, _format_of(data)), data)
        added.append(image_id(project, path))
    return {"added": added, "skipped": skipped}


def _format_of(data: bytes) -> str:
    """The Pillow format of image bytes already decoded once, from their header."""
    with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
        return image.format


def safe_file_name(client_name: str, image_format: str) -> str:
    """A file name for an upload called `client_name` by the client: its last path component, without control
    characters or any of `/\\:*?"<>|`, not hidden, with an extension that names its `image_format`.

    >>> safe_file_name("../../<b>cat</b>.png", "JPEG")
    '_b_cat__b_.jpg'
    """
    base = re.split(r"[/\\]", client_name)[-1]
    stem, extension = os.path.splitext(base)
    if extension.lower() not in IMAGE_EXTENSIONS:
        stem, extension = base, ""
    stem = _UNSAFE_IN_NAMES.sub("_", stem).strip(". ")[:MAX_STEM_LENGTH] or "photo"
    known = FORMAT_EXTENSIONS[image_format]
    same_format = {".jpg": (".jpg", ".jpeg"), ".tif": (".tif", ".tiff")}.get(known, (known,))
    return stem + (extension if extension.lower() in same_format else known)


def _save_new_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path`, or the first free `name-1.ext`, ... beside it (never over a file); returns it."""
    while True:
        target = free_name(path)
        try:
            file = open(target, "xb")  # noqa: SIM115 (closed below; "x": another process may take the name)
        except FileExistsError:
            continue
        try:
            with file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target


def import_folder(workspace: Workspace, name: str, folder: str | Path) -> Project:
    """A new project `name` holding the photos of `folder`'s class sub-folders, hard-linked where the file system
    allows, else copied; `folder` is only read. A `StudioError` when it holds no class folder with photos."""
    source = Path(os.path.abspath(Path(folder).expanduser()))
    if not source.is_dir():
        raise StudioError(f"{source} is not a folder. Received: folder={str(folder)!r}. Give a data folder's path.")
    try:
        index = index_folder(source)
    except DatasetError as error:
        raise StudioError(str(error)) from None
    _refuse_splits(source, index.class_names, folder)
    project = workspace.create_project(name)
    with changing(project):
        for class_name in index.class_names:
            (project.data_dir / class_name).mkdir()
        for photo in index.files:
            target = project.data_dir / Path(photo).relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(Path(photo), target)
    return project


def _refuse_splits(source: Path, class_names: Sequence[str], folder: str | Path) -> None:
    """A `StudioError` when `source` holds splits (`training_set/`, `val_set/`) of the same classes rather than
    classes: importing it would make each split a class."""
    inner = [{entry.name for entry in os.scandir(source / name) if entry.is_dir()} for name in class_names]
    shared = set.intersection(*inner) if len(inner) >= 2 else set()
    if len(shared) >= 2:
        raise StudioError(
            f"{source} holds {', '.join(class_names)}, each with the same class folders ({', '.join(sorted(shared))}): "
            f"they look like splits, not classes. Received: folder={str(folder)!r}. Import one of them, such as "
            f"{source / class_names[0]}."
        )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # another file system, or one without links
        shutil.copy2(source, target)


def list_images(
    project: Project, class_name: str | None = None, offset: int = 0, limit: int = 200, finding: str | None = None
) -> dict:
    """One page of the project's photos, sorted by class and path, with the last audit's findings on each.

    Returns `{"total", "images": [{"id", "class", "name", "findings"}]}`, `total` counting every photo of the
    class and finding kind asked for (both optional).
    """
    if class_name is not None:
        class_folder(project, class_name)
    if finding is not None and finding not in FINDING_KINDS:
        raise StudioError(f"No finding is called {finding!r}. Received: finding={finding!r}. Kinds: {FINDING_KINDS}.")
    index = _index(project)
    if index is None:
        return {"total": 0, "images": []}
    findings = read_findings(project.audit_dir / "audit.json", project.data_dir)
    below = len(index.root) + 1  # the index's paths are ROOT/CLASS/...: slicing them is 50x faster than pathlib
    rows = [
        (path[below:].replace(os.sep, "/"), index.class_names[label])
        for path, label in zip(index.files, index.labels)
        if class_name is None or index.class_names[label] == class_name
    ]
    if finding is not None:
        rows = [row for row in rows if any(found["kind"] == finding for found in findings.get(row[0], []))]
    images = [
        {"id": image, "class": label, "name": image.split("/", 1)[1], "findings": findings.get(image, [])}
        for image, label in rows[offset : offset + limit]
    ]
    return {"total": len(rows), "images": images}


def count_findings(project: Project) -> dict[str, int]:
    """How many photos now in the data have a finding of each kind in the last audit."""
    findings = read_findings(project.audit_dir / "audit.json", project.data_dir)
    counts: dict[str, int] = defaultdict(int)
    for image, found in findings.items():
        if (project.data_dir / image).is_file():
            for kind in dict.fromkeys(entry["kind"] for entry in found):
                counts[kind] += 1
    return dict(counts)
