"""Helpers of the service's tests: a real server, set up as `imgclf serve` sets it up, and a model that waits."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from imgclf.deploy.predictor import Run
from imgclf.serve import ServeOptions
from imgclf.serve.server import server_config


@contextmanager
def running(app: FastAPI, options: ServeOptions | None = None) -> Iterator[str]:
    """Serve `app` with `imgclf serve`'s uvicorn settings and connection limits on a free localhost port, in a
    thread; yields the base URL."""
    server = uvicorn.Server(server_config(app, options or ServeOptions(), "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join()


def held(run: Run) -> tuple[Run, threading.Event, threading.Event]:
    """A copy of `run` whose model, given a real photo, sets `entered` and waits for `release` (at most 30 s);
    the warm-up's black batch passes. Returns the copy, `entered` and `release`."""
    entered, release = threading.Event(), threading.Event()
    waiting = copy.copy(run)

    def predict_tensors(images):
        if images.float().mean() > 0:
            entered.set()
            release.wait(30)
        return run.predict_tensors(images)

    waiting.predict_tensors = predict_tensors
    return waiting, entered, release
