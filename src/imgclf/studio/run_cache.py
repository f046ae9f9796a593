"""The runs the studio has loaded to predict with: a few at most, loaded again when training changes their files.

A model takes a second or more to load and tens of megabytes to hold, so the last few runs used stay loaded;
a resumed training that writes new weights (or a new temperature) makes the next request load the run again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.deploy.predictor import Run, load
from imgclf.runs import CALIBRATION_FILE, WEIGHTS_FILE
from imgclf.studio.inspection import run_folder
from imgclf.studio.workspace import Project, StudioError

KEPT_RUNS = 3

Stamp = tuple[tuple[int, int] | None, ...]
"""When and at what size the run's weights and calibration were last written (None for a missing file)."""


@dataclass
class _Loaded:
    run: Run
    stamp: Stamp
    calling: threading.Lock = field(default_factory=threading.Lock)


def _stamp(folder: Path) -> Stamp:
    stamps = []
    for name in (WEIGHTS_FILE, CALIBRATION_FILE):
        try:
            status = (folder / name).stat()
            stamps.append((status.st_mtime_ns, status.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


class RunCache:
    """The last `size` runs used, each loaded with `imgclf.load` (PyTorch engine on the CPU). Thread-safe."""

    def __init__(self, size: int = KEPT_RUNS):
        self.size = size
        self._loaded: OrderedDict[Path, _Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project: Project, run_name: str) -> Run:
        """The run `run_name` of `project`, loaded; `NotFound` when there is no such run, `StudioError` when it
        cannot be loaded."""
        return self._entry(project, run_name).run

    @contextmanager
    def calling(self, project: Project, run_name: str) -> Iterator[Run]:
        """The run, for one model call at a time: predictions, Grad-CAM and export of a run take turns."""
        entry = self._entry(project, run_name)
        with entry.calling:
            yield entry.run

    def _entry(self, project: Project, run_name: str) -> _Loaded:
        folder = run_folder(project, run_name)
        stamp = _stamp(folder)
        if stamp[0] is None:
            raise StudioError(
                f"The run {run_name!r} has no {WEIGHTS_FILE} yet: it has not finished an epoch. "
                "Wait for its first epoch, or train it again."
            )
        # Loading under the lock: two requests for a run not loaded yet load it once.
        with self._lock:
            entry = self._loaded.get(folder)
            if entry is None or entry.stamp != stamp:
                entry = _Loaded(_load(folder), stamp)
                self._loaded[folder] = entry
            self._loaded.move_to_end(folder)
            while len(self._loaded) > self.size:
                self._loaded.popitem(last=False)
            return entry


def _load(folder: Path) -> Run:
    try:
        return load(folder)
    except ImgclfError as error:
        raise StudioError(str(error)) from None
