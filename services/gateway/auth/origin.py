"""Which web pages may use this gateway: the ``Origin`` allow-list and dev mode's ``Host`` check.

Browsers attach ``Origin`` to every WebSocket handshake and never enforce the same-origin policy on
WebSockets themselves, so without this check any page a user visits could drive their gateway (in
dev mode with no key at all, or with a token the page got hold of). Allowed: handshakes without an
``Origin`` (not a browser: such clients authenticate with keys), pages served from this machine
(``localhost``, ``127.0.0.0/8``, ``[::1]``, any port), and the origins listed in ``ALLOWED_ORIGINS``
(``*`` for any). The ``Host`` header is never the reference: under DNS rebinding a foreign page's
own name points at the gateway, so its ``Origin`` and the ``Host`` it sends agree.

A keyless dev-mode gateway also refuses browser requests addressed to any name but a loopback one:
that is what makes DNS rebinding (a foreign name resolving to 127.0.0.1) useless against it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from shared.errors import Forbidden


def is_websocket(request: web.Request) -> bool:
    """The request is a WebSocket handshake."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


def is_browser(request: web.Request) -> bool:
    """A browser made the request: browsers send ``Origin`` or ``Sec-Fetch-*``; SDKs and probes send neither."""
    h = request.headers
    return "Origin" in h or "Sec-Fetch-Site" in h or "Sec-Fetch-Mode" in h


def loopback_name(host: str) -> bool:
    """``localhost``, an address in 127.0.0.0/8 or ``::1``, with or without a port (``[::1]:8080``)."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """The page at ``origin`` may call this gateway from a browser."""
    if "*" in allowed:
        return True
    normal = _normal(origin)
    if normal is None:
        return False  # "null" (sandboxed frames, file://) and garbage never match
    parts = urlsplit(normal)
    if parts.scheme in ("http", "https") and loopback_name(parts.netloc):
        return True
    return normal in {_normal(a) for a in allowed}


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """Raise Forbidden unless the handshake's ``Origin`` may open a WebSocket here."""
    origin = request.headers.get("Origin")
    if origin is None or origin_allowed(origin, allowed):
        return
    raise Forbidden("this page's origin may not open a WebSocket here (see ALLOWED_ORIGINS)")


def check_dev_host(request: web.Request) -> None:
    """Dev mode: a browser request must address the gateway by a loopback name (DNS rebinding)."""
    if is_browser(request) and not loopback_name(request.headers.get("Host", "")):
        raise Forbidden("this development gateway (AUTH_DISABLED) answers browsers only at localhost, "
                        "127.0.0.1 or [::1]")


def _normal(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip().rstrip("/").lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"
