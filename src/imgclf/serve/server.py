"""`serve(run_dir)`: take the address, load the run once, and answer on it with uvicorn until Ctrl-C."""

from __future__ import annotations

import errno
import functools
import logging
import socket
from contextlib import suppress
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from imgclf.config import ConfigError
from imgclf.deploy.predictor import load
from imgclf.serve.app import create_app
from imgclf.serve.connections import ConnectionGuard, GuardedH11Protocol
from imgclf.serve.options import ServeOptions, descriptor_limit

logger = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PORT = 65535
BACKLOG = 2048  # uvicorn's default


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "auto",
    options: ServeOptions | None = None,
) -> None:
    """Load the run in `run_dir` once and serve it on http://host:port until interrupted (Ctrl-C).

    engine: the runtime `imgclf.load` runs the model with ("auto" picks the fastest installed one).
    The address is taken before the model loads, so a port out of range or in use fails at once (`ConfigError`).
    """
    options = options or ServeOptions()
    sockets = listen(host, port, listen_backlog(options))
    try:
        if host not in LOCAL_HOSTS:
            logger.warning(
                "Serving on %s: anyone who can reach this machine can use the model (no authentication).", host
            )
        app = create_app(load(run_dir, engine=engine), options)
        for sock in sockets:
            logger.info("Listening on %s (Ctrl-C stops)", _url(sock))
        server = uvicorn.Server(server_config(app, options, host, port))
        # uvicorn shuts down on Ctrl-C, then raises it again; for a server that is the normal way to end.
        with suppress(KeyboardInterrupt):
            server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def listen_backlog(options: ServeOptions) -> int:
    """The listen backlog: uvicorn's, or half the open files `max_connections` leaves over if that is less.

    The event loop accepts up to a backlog of connections in one go, before any is checked against the cap, so
    these must fit in the open files too.
    """
    return max(1, min(BACKLOG, (descriptor_limit() - options.max_connections) // 2))


def server_config(app: FastAPI, options: ServeOptions, host: str, port: int, access_log: bool = True) -> uvicorn.Config:
    """uvicorn's settings for `app`, with the connection limits of `options` (see `imgclf.serve.connections`);
    `access_log`: log a line for every request."""
    guard = ConnectionGuard(options.max_connections, options.header_timeout_s)
    protocol = functools.partial(GuardedH11Protocol, guard=guard)
    backlog = listen_backlog(options)
    return uvicorn.Config(
        app, host=host, port=port, http=protocol, backlog=backlog, log_level="info", access_log=access_log
    )


def listen(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Sockets bound and listening on `port` of every address `host` names, set up as uvicorn's own would be.

    Raises `ConfigError` naming --host or --port when the port is out of range, already in use, or not ours to
    take. Listening at once holds the port: a second server started meanwhile fails here, not after loading its
    model, and clients connecting before the app is ready wait instead of being refused.
    """
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(
            f"--port must be from 0 to {MAX_PORT} (0: any free port). Received: --port={port}. The default is 8000."
        )
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(
            f"--host {host} is not an address or a host name this machine knows ({error.strerror}). "
            f"Received: --host={host}. Use 127.0.0.1 for this machine only, 0.0.0.0 for every network."
        ) from None
    sockets = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            # asyncio's create_server, which uvicorn uses, sets these: the port can be taken again while
            # connections of a stopped server linger, and an IPv6 socket leaves IPv4 to its own socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError as error:
        for sock in sockets:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use. Received: --port={port}. "
                "Choose another port with --port, or stop the other server."
            ) from None
        raise ConfigError(
            f"Cannot listen on port {port} of {host}: {error.strerror or error}. "
            f"Received: --host={host}, --port={port}."
        ) from None
    return sockets


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
