"""The runs the studio has loaded to predict with, and the one thread their models run on.

A model takes a second or more to load and tens of megabytes to hold, so the last few runs used stay loaded;
a resumed training that writes new weights (or a new temperature) makes the next request load the run again.

Every model call (prediction, Grad-CAM, export) runs on the cache's model thread, one at a time, with one
PyTorch thread. The studio answers one image at a time while the browser, and often a training, want the same
cores; with PyTorch's two OpenMP threads each layer spun waiting for a thread the system had not scheduled:
on 2 cores kept busy by other work (load 11-12), EfficientNet-Lite0 answered 0.6 webcam frames a second (480 ms
of CPU a frame), and 10.5 with one thread (24 ms of CPU a frame; `bench/studio_webcam.py`).
`torch.set_num_threads` called on a thread applies to that thread's calls alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from imgclf.config import ImgclfError
from imgclf.deploy.predictor import Run, load
from imgclf.runs import CALIBRATION_FILE, WEIGHTS_FILE
from imgclf.studio.inspection import run_folder
from imgclf.studio.workspace import Project, StudioError

KEPT_RUNS = 3
MODEL_THREADS = 1
Result = TypeVar("Result")

Stamp = tuple[tuple[int, int] | None, ...]
"""When and at what size the run's weights and calibration were last written (None for a missing file)."""


@dataclass(frozen=True)
class _Loaded:
    run: Run
    stamp: Stamp


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
    """The last `size` runs used, each loaded with `imgclf.load` (PyTorch engine on the CPU). Thread-safe.

    >>> runs = RunCache()
    >>> prediction = await runs.call(project, "seed-cnn-20261203-101500", lambda run: run.predict("plane.jpg"))
    """

    def __init__(self, size: int = KEPT_RUNS):
        self.size = size
        self._loaded: OrderedDict[Path, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._model_thread = ThreadPoolExecutor(
            1, thread_name_prefix="imgclf-studio-model", initializer=torch.set_num_threads, initargs=(MODEL_THREADS,)
        )

    async def call(self, project: Project, run_name: str, work: Callable[[Run], Result]) -> Result:
        """`work(run)` with the run `run_name` of `project`, on the model thread, without blocking the event loop."""
        future = self._model_thread.submit(lambda: work(self.get(project, run_name)))
        return await asyncio.wrap_future(future)

    def get(self, project: Project, run_name: str) -> Run:
        """The run `run_name` of `project`, loaded; `NotFound` when there is no such run, `StudioError` when it
        cannot be loaded."""
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
            return entry.run

    def close(self) -> None:
        """Let the model thread finish its work and end (the app's shutdown)."""
        self._model_thread.shutdown()


def _load(folder: Path) -> Run:
    try:
        return load(folder)
    except ImgclfError as error:
        raise StudioError(str(error)) from None
