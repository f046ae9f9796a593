"""A real server for the service's tests: uvicorn set up as `imgclf serve` sets it up, on localhost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

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
