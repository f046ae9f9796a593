"""The studio's worker process: one job (train, resume or audit) run through the library, its events sent back.

`JobQueue` (`jobs.py`) starts `work` in a fresh process (multiprocessing's "spawn": PyTorch and fork do not mix)
with two pipes. On `events` the worker sends event dicts: "log" lines, throttled "step" progress, and last "done",
"error" or "cancelled". On `control` the server sends "cancel", and the pipe ends when the server has gone; either
way the worker interrupts its work with SIGINT, exactly as Ctrl-C does, so a training keeps its last complete epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection

from imgclf.audit.embeddings import default_model
from imgclf.audit.folders import audit_folders
from imgclf.audit.options import DEFAULT_MODEL
from imgclf.audit.writing import write_audit
from imgclf.config import ImgclfError
from imgclf.training.loop import TrainingInterrupted, train

log = logging.getLogger(__name__)

STEP_EVENT_INTERVAL_S = 0.25
"""The least time between two "step" events: a page redraws its progress a few times a second at most."""


def work(kind: str, options: dict, epochs: int | None, events: Connection, control: Connection) -> None:
    """Run one job of `kind` with `options` (`imgclf.train`'s, or the audit's `data` and `out`) and send its events;
    the last is "done", "error" with the library's one line, or "cancelled". `epochs`: a training's in all."""
    if hasattr(os, "setsid"):
        os.setsid()  # a Ctrl-C in the server's terminal reaches the server alone, which stops this job once
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = EventSender(events)
    _forward_logs(sender)
    working = threading.Event()
    threading.Thread(target=_interrupt_when_told, args=(control, working), name="studio-control", daemon=True).start()
    sender.send(_outcome(kind, options, StepEvents(sender, epochs), working))


def _outcome(kind: str, options: dict, progress: StepEvents, working: threading.Event) -> dict:
    """The job's last event, once `kind` has run; `working` is set while the work can be interrupted."""
    try:
        working.set()
        try:
            if kind == "audit":
                _audit(options["data"], options["out"], progress)
            else:
                train(progress=progress, **options)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is over: a cancel arriving now comes too late
    except TrainingInterrupted as stop:
        return {"type": "cancelled", "message": str(stop)}
    except KeyboardInterrupt:
        return {"type": "cancelled", "message": "Cancelled; nothing was saved."}
    except ImgclfError as error:
        return {"type": "error", "message": str(error)}
    except Exception as error:
        log.exception("The studio's %s job failed", kind)
        return {"type": "error", "message": bug_summary(error)}
    return {"type": "done"}


def _audit(data: str, out: str, progress: StepEvents) -> None:
    """Audit the project's `data` folder as `imgclf audit` does, with label issues when a backbone is installed,
    and write the audit into `out`."""
    model = default_model()
    if model is None:
        log.warning(
            "%s's weights are not installed: no label issues, outliers or embedding near-duplicates.", DEFAULT_MODEL
        )
    report = audit_folders({"train": data}, model=model, progress=lambda done, total: progress(None, done, total))
    write_audit(report, out)


def bug_summary(error: BaseException) -> str:
    """One line for an error that is a bug, not the user's input: what it is, and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}. This is a bug in imgclf; the server's log has the traceback."


class EventSender:
    """Sends event dicts to the server, from any thread; a server that has gone is ignored (the job stops soon)."""

    def __init__(self, events: Connection):
        self.events = events
        self.lock = threading.Lock()

    def send(self, event: dict) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.events.send(event)


class StepEvents:
    """The `progress(epoch, step, steps)` callback: a "step" event a few times a second, with the time left.

    Once an epoch of this job has ended, each epoch to come takes as long as those did on average (validation
    included); in the first, each step to come as long as those so far. `eta_s` is None until a step has been
    timed. An audit (`epoch` None) counts its files as one long epoch.
    """

    def __init__(self, sender: EventSender, epochs: int | None):
        self.sender, self.epochs = sender, epochs
        self.first_epoch: int | None = None
        self.epoch: int | None = None
        self.started = self.epoch_started = time.monotonic()
        self.sent_at = float("-inf")

    def __call__(self, epoch: int | None, step: int, steps: int) -> None:
        now = time.monotonic()
        if epoch is not None and epoch != self.epoch:
            if self.first_epoch is None:
                self.first_epoch, self.started = epoch, now
            self.epoch, self.epoch_started = epoch, now
        if now - self.sent_at < STEP_EVENT_INTERVAL_S:
            return
        self.sent_at = now
        left = self._seconds_left(now, epoch, step, steps)
        event = {"epoch": epoch, "epochs": self.epochs, "step": step, "steps": steps}
        self.sender.send({"type": "step", **event, "eta_s": None if left is None else round(left, 1)})

    def _seconds_left(self, now: float, epoch: int | None, step: int, steps: int) -> float | None:
        if epoch is None or self.epochs is None:
            return (now - self.started) / max(step, 1) * (steps - step)
        ended = epoch - self.first_epoch
        if ended:
            per_epoch = (self.epoch_started - self.started) / ended
            return max(per_epoch * (self.epochs - epoch + 1) - (now - self.epoch_started), 0.0)
        if step <= 1:
            return None  # the first call comes after the first step: nothing is timed yet
        per_step = (now - self.epoch_started) / (step - 1)
        return per_step * (steps - step) + per_step * steps * (self.epochs - epoch)


class _LogEvents(logging.Handler):
    """The library's log lines (images found, each epoch, warnings) as "log" events."""

    def __init__(self, sender: EventSender):
        super().__init__(logging.INFO)
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        self.sender.send({"type": "log", "level": record.levelname.lower(), "message": record.getMessage()})


def _forward_logs(sender: EventSender) -> None:
    """Send the library's log lines to the server, and print its warnings and tracebacks in its terminal too."""
    library = logging.getLogger("imgclf")
    library.setLevel(logging.INFO)
    library.addHandler(_LogEvents(sender))
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.WARNING)
    library.addHandler(terminal)


def _interrupt_when_told(control: Connection, working: threading.Event) -> None:
    """Wait for "cancel" from the server, or for the server to go, then interrupt the work as Ctrl-C does (once it
    has begun: a KeyboardInterrupt anywhere else would end the worker without its last event)."""
    with contextlib.suppress(EOFError, OSError):  # the end of the pipe: the server has gone
        control.recv()
    working.wait()
    signal.raise_signal(signal.SIGINT)
