"""uvicorn's HTTP protocol with guards for the connections themselves: a deadline for each request's headers, a
cap on open connections, and JSON for requests too malformed to reach the app.

uvicorn's own limits start too late for a client that connects and never finishes a request: `timeout_keep_alive`
runs only after an answer, and `limit_concurrency` is checked only once a request's headers are in, so such
connections were held forever, each an open file (about 1,100 of them against a limit of 1,024 stopped the
server, its log full of "Too many open files"). Here every connection not running a request must send the next
request's headers within `header_timeout_s`, and at `max_connections` a new connection closes the oldest of
those instead of being refused, so a client that sends its request at once is still answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

REPORT_INTERVAL_S = 60.0


def json_error(status: int, message: str, headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 answer `{"error": message}` that closes the connection, for where the app cannot answer."""
    body = json.dumps({"error": message}).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


class ConnectionGuard:
    """What the connections of one server share: the limits, the connections waiting for a request's headers
    (oldest first), and the count of those closed or refused at the limit, logged at most once a minute."""

    def __init__(self, max_connections: int, header_timeout_s: float):
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.waiting: dict[GuardedH11Protocol, None] = {}
        self._closed = 0
        self._refused = 0
        self._report: asyncio.TimerHandle | None = None
        self._reported_at = -math.inf

    def make_room(self, newcomer: GuardedH11Protocol) -> bool:
        """Close the connection that has waited longest for a request; False when every other one is busy."""
        for connection in self.waiting:
            if connection is not newcomer:
                connection.close()
                self._count(closed=1)
                return True
        self._count(refused=1)
        return False

    def _count(self, closed: int = 0, refused: int = 0) -> None:
        self._closed += closed
        self._refused += refused
        if self._report is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._reported_at + REPORT_INTERVAL_S - loop.time())
            self._report = loop.call_later(delay, self._log)

    def _log(self) -> None:
        logger.warning(
            "At the limit of %d open connections (max_connections): closed %d that had sent no request, refused "
            "%d new ones with 503 as every other connection was busy (reported at most every %g s).",
            self.max_connections,
            self._closed,
            self._refused,
            REPORT_INTERVAL_S,
        )
        self._closed = self._refused = 0
        self._report = None
        self._reported_at = asyncio.get_running_loop().time()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the `ConnectionGuard`'s limits and JSON for requests h11 cannot parse.

    uvicorn.Config(app, http=functools.partial(GuardedH11Protocol, guard=ConnectionGuard(1000, 5.0)))
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ):
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self._header_deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        if len(self.connections) > self.guard.max_connections and not self.guard.make_room(self):
            self._refuse()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._running_a_request():
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._running_a_request():
            self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this while handling h11's error, which says what is wrong (a Content-Length that is not
        # a number, a header line h11 cannot read, headers over 16 KB); uvicorn's own answer is plain text.
        error = sys.exception()
        reason = str(error) if isinstance(error, h11.RemoteProtocolError) else msg
        message = f"The request is not valid HTTP/1.1: {reason}. Send well-formed headers."
        self.transport.write(json_error(400, message))
        self.transport.close()

    def close(self) -> None:
        """Close the connection at once (it is running no request)."""
        self._stop_waiting()
        self.transport.close()

    def _refuse(self) -> None:
        # The answer goes first and the connection stays open, its request unread, until the client closes it
        # (or the header deadline): closing with the request unread would reset it, and with it the answer.
        self._refused = True
        limit = self.guard.max_connections
        message = f"The server has {limit} connections open, its limit, all busy. Retry in a moment."
        self.transport.write(json_error(503, message, ("retry-after: 1",)))
        self.transport.write_eof()

    def _running_a_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _wait_for_headers(self) -> None:
        # Counted from when the connection opened or last answered, not from its last byte: a client sending
        # a byte now and then would otherwise hold it for ever.
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.guard.header_timeout_s, self.close)
            self.guard.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
            self.guard.waiting.pop(self, None)
