"""`studio(workspace)`: take the address, open the page in the browser, and answer with uvicorn until Ctrl-C.

imgclf studio my-workspace --port 8765 --no-browser
"""

from __future__ import annotations

import logging
import os
import sys
import webbrowser
from contextlib import suppress
from pathlib import Path

import uvicorn

from imgclf.serve.server import listen, listen_backlog, server_config
from imgclf.studio.app import create_app
from imgclf.studio.options import StudioOptions
from imgclf.studio.workspace import Workspace

logger = logging.getLogger(__name__)

ANY_ADDRESS = ("0.0.0.0", "::", "")


def page_url(host: str, port: int) -> str:
    """The address of the studio's page: this machine's own for a loopback or wildcard host."""
    if host in ANY_ADDRESS or StudioOptions(host=host).local_only:
        return f"http://127.0.0.1:{port}/"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def has_display() -> bool:
    """Whether a graphical browser can open here; without one, Python's `webbrowser` would start a text browser
    (lynx, w3m) in the terminal the studio logs to."""
    return sys.platform != "linux" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def studio(workspace: str | Path, options: StudioOptions | None = None) -> None:
    """Serve the studio over `workspace` (made when missing) until interrupted (Ctrl-C).

    Listens on `options.host` and `options.port` (default 127.0.0.1 and any free port), says where in the log,
    and opens the page in the default browser unless `options.open_browser` is False or there is no display.
    A port out of range or in use fails at once (`ConfigError`).
    """
    options = options or StudioOptions()
    limits = options.uploads
    sockets = listen(options.host, options.port, listen_backlog(limits))
    try:
        workspace = Workspace(workspace)
        url = page_url(options.host, sockets[0].getsockname()[1])
        if not options.local_only:
            logger.warning(
                "Listening on %s: anyone who can reach this machine can open the studio, see and change every "
                "project in %s, import photos from any folder this user can read, and start training (there is no "
                "password).",
                options.host,
                workspace.root,
            )
        # No line per request: the hundreds of thumbnails of one page would bury everything else.
        config = server_config(create_app(workspace, options), limits, options.host, options.port, access_log=False)
        logger.info("imgclf studio on %s with the projects in %s (Ctrl-C stops)", url, workspace.root)
        if options.open_browser and has_display():
            # The socket already listens: the browser's first request waits until uvicorn answers it.
            webbrowser.open(url)
        # uvicorn shuts down on Ctrl-C, then raises it again; for a server that is the normal way to end.
        with suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
