"""Which web pages may open a WebSocket to this gateway: the ``Origin`` check for browser routes.

Browsers attach ``Origin`` to every WebSocket handshake and never enforce the same-origin policy on
WebSockets themselves, so without this check any page a user visits could drive their gateway (in
dev mode with no key at all, or with a token the page got hold of). Allowed: handshakes without an
``Origin`` (not a browser: such clients authenticate with keys), the gateway's own pages (same
host), and the origins listed in ``ALLOWED_ORIGINS`` (``*`` for any).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from shared.errors import Forbidden


def is_websocket(request: web.Request) -> bool:
    """The request is a WebSocket handshake."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """Raise Forbidden unless the handshake's ``Origin`` may open a WebSocket here."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed:
        return
    normal = _normal(origin)
    if normal is not None and (urlsplit(normal).netloc == request.host.lower()
                               or normal in {_normal(a) for a in allowed}):
        return
    raise Forbidden("this page's origin may not open a WebSocket here (see ALLOWED_ORIGINS)")


def _normal(origin: str) -> str | None:
    parts = urlsplit(origin.strip().rstrip("/").lower())
    if not parts.scheme or not parts.netloc:
        return None  # "null" (sandboxed frames, file://) and garbage never match
    return f"{parts.scheme}://{parts.netloc}"
