"""The demo page: ``/`` and its files under ``/static/``, served from the package, no build step.

Public like the probes (a page holds no secrets; it asks ``POST /v1/tokens`` for a token when the
WebSocket says one is needed). A strict Content-Security-Policy keeps it to its own scripts.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon"}


def _headers(request: web.Request) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",  # a restarted dev server should never leave a stale script behind
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # 'self' covers this origin's ws:/wss: sockets (CSP 3). The Host header must never be copied in
        # here: it is the client's to choose, and a crafted one rewrote the policy.
        "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; "
                                    "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                    "frame-ancestors 'none'"),
    }


async def index(request: web.Request) -> web.FileResponse:
    """``GET /``: the demo page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={**_headers(request),
                                                                "Content-Type": "text/html; charset=utf-8"})


async def static_file(request: web.Request) -> web.FileResponse:
    """``GET /static/{name}``: one file of the page; only plain names in the static folder."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    ctype = _TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or ctype is None or not path.is_file():
        raise web.HTTPNotFound()
    charset = "; charset=utf-8" if ctype.startswith("text/") else ""
    return web.FileResponse(path, headers={**_headers(request), "Content-Type": ctype + charset})


def add_routes(app: web.Application) -> None:
    """Register ``/`` and ``/static/{name}``."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
