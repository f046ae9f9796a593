"""Refusing requests that do not come from the studio's own page: `SameOriginOnly`, an ASGI middleware.

A web page on another site can make the browser send requests to 127.0.0.1, and a DNS name of an attacker's
can be made to point at 127.0.0.1 (DNS rebinding). So every request must name the studio itself in its `Host`
header, and every request that may change files (not GET, HEAD or OPTIONS) must not come from another origin:
its `Origin` header, when present, must be the studio's own, and its `Sec-Fetch-Site`, when present,
`same-origin` or `none`. Requests with neither header (curl, scripts) pass: browsers always send them.
Every answer also forbids other sites to show the studio in a frame, where a user could be tricked into clicks,
and the page's content security policy lets it load and reach nothing but the studio.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclf.studio.options import LOOPBACK_HOSTS

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SAME_SITE = ("same-origin", "none")
ANSWER_HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]
PAGE_POLICY = (
    b"default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; object-src 'none'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The page's content security policy: its scripts, requests and pictures come from the studio alone (a name
that slipped into markup could run nothing, and nothing leaves 127.0.0.1); style attributes are the charts' bars."""
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
"""FastAPI's API pages, whose scripts come from a CDN: only framing is forbidden there."""


class SameOriginOnly:
    """Answer 403 `{"error": ...}` to a request with a foreign `Host`, or a foreign `Origin` or `Sec-Fetch-Site`
    on a request that may write; pass the others to `app`.

    The studio's own names are the loopback names, `host` (the address it was asked to listen on) and the
    address the connection reached, each with the port the connection reached.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1"):
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                policy = b"frame-ancestors 'none'" if scope["path"] in DOCS_PATHS else PAGE_POLICY
                added = [*ANSWER_HEADERS, (b"content-security-policy", policy)]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        if refusal is None:
            await self.app(scope, receive, send_with_headers)
        elif scope["type"] == "http":
            await JSONResponse({"error": refusal}, status_code=403)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None when it may go on."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get("host", "")
        own = self.own_hosts(scope)
        if host.lower() not in own:
            return (
                f"The Host header names another server than this studio (DNS rebinding?). Received: host={host!r}. "
                f"Open the studio at http://{sorted(own)[0]}/."
            )
        if scope["type"] == "http" and scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host.lower()}":
            return (
                f"Requests that change files must come from the studio's own page. Received: origin={origin!r}. "
                f"Use the page at http://{host}/ or a script without an Origin header."
            )
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in SAME_SITE:
            return (
                "Requests that change files must come from the studio's own page. "
                f"Received: sec-fetch-site={fetch_site!r}. Use the page at http://{host}/."
            )
        return None

    def own_hosts(self, scope: Scope) -> set[str]:
        """The `Host` values naming this studio, as the connection reached it."""
        server_host, port = scope.get("server") or ("127.0.0.1", 80)
        names = {*LOOPBACK_HOSTS, self.host, server_host}
        bracketed = {f"[{name}]" if ":" in name else name for name in names}
        own = {f"{name}:{port}".lower() for name in bracketed}
        if port == 80:  # browsers leave out the default port
            own |= {name.lower() for name in bracketed}
        return own
