"""The studio's background jobs: trainings, resumes and audits, one at a time in a worker process, the rest queued.

    jobs = JobQueue(workspace)
    job = jobs.submit(workspace.project("cars-planes"), "train", {"recipe": "quick", "options": {"epochs": 5}})
    async for event in jobs.events(job.id):       # "queued", "started", "step"..., "epoch"..., "done"
        ...
    jobs.close()                                  # cancels what is left, joins the worker

Each job runs `worker.work` in a fresh process; a thread of the server watches it: it passes the worker's events
on, adds an "epoch" event with the row of the run's `history.csv` as each epoch ends, and starts the next job when
the worker has gone. Every job keeps its events (consecutive "step" events as the latest alone) so that a page
that reconnects can replay them from the last one it saw.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from imgclf.runs import HISTORY_FILE, RunError, read_history
from imgclf.studio.recipes import Training, plan_resume, plan_training
from imgclf.studio.worker import work
from imgclf.studio.workspace import NotFound, Project, StudioError, Workspace, check_name
from imgclf.training.writer import default_run_name

KINDS = ("train", "resume", "audit")
ENDINGS = {"done": "done", "error": "failed", "cancelled": "cancelled"}
"""A job's last event, and the state it leaves the job in."""
HISTORY_POLL_S = 0.5
"""How often the watcher looks at a training's `history.csv` for a newly ended epoch."""
STOP_TIMEOUT_S = 30.0
"""How long `close` waits for a cancelled worker to save its epoch and end before it terminates the process."""


@dataclass
class Job:
    """One job and what the page shows of it (`to_dict`); `events` are kept for replay."""

    id: str
    project: Project
    kind: str
    training: Training | None
    run: str | None = None
    state: str = "queued"
    created: str = field(default_factory=lambda: _now())
    started: str | None = None
    finished: str | None = None
    message: str | None = None
    progress: dict | None = None
    history: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list, repr=False)
    told: int = 0
    """The number of the last event."""
    cancelled: bool = False
    waiters: list = field(default_factory=list, repr=False)
    history_stamp: tuple = ()

    @property
    def ended(self) -> bool:
        return self.state in ENDINGS.values()

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else self.project.runs_dir / self.run

    def keep(self, event: dict) -> None:
        """Number `event` after the last one and keep it; a "step" replaces a "step" just before it (a page that
        reconnects needs only the latest), and is the job's progress."""
        if event["type"] == "step":
            self.progress = {name: event[name] for name in ("epoch", "epochs", "step", "steps", "eta_s")}
            if self.events and self.events[-1]["type"] == "step":
                self.events.pop()
        self.told += 1
        self.events.append({**event, "seq": self.told})

    def to_dict(self) -> dict:
        """The job as the API answers it."""
        names = ("id", "kind", "state", "run", "created", "started", "finished", "message", "progress")
        return {"project": self.project.name, **{name: getattr(self, name) for name in names}, "history": self.history}


@dataclass
class _Worker:
    """The process running a job, the server's ends of its pipes, and the thread watching it."""

    job: Job
    process: multiprocessing.process.BaseProcess
    events: Connection
    control: Connection
    watcher: threading.Thread | None = None


class JobQueue:
    """Runs the workspace's jobs one at a time, each in a worker process; the others wait in order."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._processes = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: _Worker | None = None
        self._closed = False
        # Before multiprocessing's own exit handler, which would wait for a running worker to end its training.
        atexit.register(self.close)

    def submit(self, project: Project, kind: str, options: dict) -> Job:
        """Queue a job on `project`, checked first; it starts at once when no other job runs.

        `kind` "train": options `{"recipe": name, "options": {imgclf.train's options}}`; "resume": `{"run": name,
        "epochs": more (optional)}`; "audit": `{}`. Raises `StudioError` (the library's message for a bad option).
        """
        job = Job(uuid.uuid4().hex[:12], project, kind, None)
        if kind == "train":
            project.inside(project.runs_dir)  # a linked runs/ would take the new run out of the workspace
            job.training = plan_training(project, options.get("recipe", "quick"), options.get("options", {}))
        elif kind == "resume":
            job.run = self._resumable(project, options.get("run"))
            job.training = plan_resume(job.run_dir, options.get("epochs"))
        elif kind == "audit":
            project.inside(project.audit_dir)
        else:
            raise StudioError(f"Unknown kind of job. Received: kind={kind!r}. Choose one of {list(KINDS)}.")
        with self._lock:
            if self._closed:
                raise StudioError("The studio is stopping and takes no more jobs. Start it again.")
            self._check_run_is_free(job)
            self._jobs[job.id] = job
            self._add_event(job, {"type": "queued"})
            self._waiting.append(job)
            self._start_next()
        return job

    def jobs(self) -> list[Job]:
        """Every job since the studio started, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def get(self, job_id: str) -> Job:
        """The job `job_id`, or `NotFound`."""
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"There is no job {job_id!r}. Received: job={job_id!r}. GET /api/jobs lists them.")
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        """Drop a queued job; interrupt a running one as Ctrl-C does (a training keeps its last complete epoch)."""
        job = self.get(job_id)
        with self._lock:
            if job.state == "queued":
                self._waiting.remove(job)
                self._end(job, {"type": "cancelled", "message": "Cancelled before it started."})
            elif job.state == "running" and not job.cancelled:
                job.cancelled = True
                with contextlib.suppress(OSError):  # the worker has just ended: its watcher says how
                    self._running.control.send("cancel")
        return job

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[dict]:
        """The job's events numbered above `after` (`seq`), as they come; ends after its last event."""
        job = self.get(job_id)
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                new = [event for event in job.events if event["seq"] > after]
                if not new and job.ended:
                    return
                woken = None if new else loop.create_future()
                if woken is not None:
                    job.waiters.append((loop, woken))
            if woken is not None:
                await woken
            for event in new:
                yield event
                after = event["seq"]

    def close(self) -> None:
        """Cancel every job left and wait for the worker to end (terminating it after `STOP_TIMEOUT_S`); also
        called when the interpreter exits."""
        atexit.unregister(self.close)
        with self._lock:
            self._closed = True
            while self._waiting:
                self._end(self._waiting.popleft(), {"type": "cancelled", "message": "The studio stopped."})
            worker = self._running
        if worker is None:
            return
        self.cancel(worker.job.id)
        worker.watcher.join(STOP_TIMEOUT_S)
        if worker.watcher.is_alive():
            worker.process.terminate()
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
        worker.watcher.join()

    def _resumable(self, project: Project, run: object) -> str:
        """`run` when it names a run of `project`, else `NotFound` (`StudioError` for a link to a run elsewhere,
        which a resume would write to)."""
        run = check_name(run, "run")
        project.inside(project.runs_dir / run)
        if not (project.runs_dir / run).is_dir():
            raise NotFound(f"There is no run {run!r} in the project {project.name!r}. Received: run={run!r}.")
        return run

    def _check_run_is_free(self, job: Job) -> None:
        """Refuse to resume a run that another job is training (holding the lock)."""
        busy = [other.id for other in self._jobs.values() if not other.ended and other.run_dir == job.run_dir]
        if job.run is not None and busy:
            raise StudioError(
                f"The run {job.run!r} is being trained by job {busy[0]}. Received: run={job.run!r}. Wait for that "
                "job to end, or cancel it, then resume the run."
            )

    def _start_next(self) -> None:
        """Start the first waiting job when none runs (holding the lock)."""
        if self._running is not None or self._closed or not self._waiting:
            return
        job = self._waiting.popleft()
        if job.kind == "train":
            job.run = _free_run_name(job.project, job.training.model)
        events, events_end = self._processes.Pipe(duplex=False)
        control_end, control = self._processes.Pipe(duplex=False)
        epochs = job.training.epochs if job.training is not None else None
        process = self._processes.Process(
            target=work,
            args=(job.kind, _worker_options(job), epochs, events_end, control_end),
            name=f"imgclf-studio-{job.id}",
        )
        process.start()
        events_end.close()  # the worker holds these ends now: when it goes, `events` reads the end of the file
        control_end.close()
        job.state, job.started = "running", _now()
        self._add_event(job, {"type": "started", "run": job.run})
        self._running = _Worker(job, process, events, control)
        self._running.watcher = threading.Thread(
            target=self._watch, args=(self._running,), name=f"studio-job-{job.id}", daemon=True
        )
        self._running.watcher.start()

    def _watch(self, worker: _Worker) -> None:
        """Pass the worker's events on until it ends, with the epochs of `history.csv`; then start the next job."""
        job, last = worker.job, None
        while True:
            if worker.events.poll(HISTORY_POLL_S):
                try:
                    event = worker.events.recv()
                except EOFError:
                    break
                with self._lock:
                    if event["type"] in ENDINGS:
                        last = event  # told once the last epochs are in
                    else:
                        self._add_epochs(job)
                        self._add_event(job, event)
            with self._lock:
                self._add_epochs(job)
        worker.process.join()
        worker.events.close()
        worker.control.close()
        with self._lock:
            self._add_epochs(job)
            self._end(job, last or _lost(job, worker.process.exitcode))
            self._running = None
            self._start_next()

    def _add_epochs(self, job: Job) -> None:
        """An "epoch" event for each row of the run's `history.csv` not yet told (holding the lock)."""
        path = job.run_dir / HISTORY_FILE if job.run_dir is not None else None
        try:
            stat = path.stat()
        except (OSError, AttributeError):
            return
        if (stat.st_mtime_ns, stat.st_size) == job.history_stamp:
            return
        job.history_stamp = (stat.st_mtime_ns, stat.st_size)
        for row in _history_so_far(job.run_dir)[len(job.history) :]:
            job.history.append(row)
            self._add_event(job, {"type": "epoch", **row})

    def _end(self, job: Job, event: dict) -> None:
        """End `job` with its last `event` (holding the lock); a run stopped before its first epoch is gone."""
        if job.run_dir is not None and not job.run_dir.is_dir():
            job.run = None
        job.state, job.finished, job.message = ENDINGS[event["type"]], _now(), event.get("message")
        self._add_event(job, {**event, "run": job.run})

    def _add_event(self, job: Job, event: dict) -> None:
        """Keep `event` in `job` and wake the job's listeners (holding the lock)."""
        job.keep(event)
        for loop, woken in job.waiters:
            with contextlib.suppress(RuntimeError):  # that listener's event loop has closed
                loop.call_soon_threadsafe(_wake, woken)
        job.waiters.clear()


def _history_so_far(run_dir: Path) -> list[dict]:
    """The rows of a training run's `history.csv` as numbers; [] while it cannot be read (being replaced)."""
    try:
        return read_history(run_dir)
    except (OSError, RunError):
        return []


def _worker_options(job: Job) -> dict:
    """What the worker runs: `imgclf.train`'s options (a new run's `out` included), or the audit's folders."""
    if job.kind == "audit":
        return {"data": str(job.project.data_dir), "out": str(job.project.audit_dir)}
    if job.kind == "train":
        return {**job.training.options, "out": str(job.run_dir)}
    return job.training.options


def _free_run_name(project: Project, model: str) -> str:
    """A new run's name in `project`, as `imgclf train` names runs (`-2`, `-3`, ... when taken)."""
    name = base = default_run_name(model)
    suffix = 1
    while (project.runs_dir / name).exists():
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def _lost(job: Job, exit_code: int | None) -> dict:
    """The last event of a worker that ended without saying how."""
    if job.cancelled:
        return {"type": "cancelled", "message": "Cancelled."}
    return {
        "type": "error",
        "message": f"The worker process stopped unexpectedly (exit code {exit_code}). The server's log says why.",
    }


def _wake(woken: asyncio.Future) -> None:
    if not woken.done():
        woken.set_result(None)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
