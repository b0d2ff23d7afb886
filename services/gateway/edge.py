"""The gateway's browser edge: dev mode's ``Host`` check and CORS for the HTTP routes.

* With ``AUTH_DISABLED`` a request a browser made must name the gateway by a loopback host
  (gateway/auth/origin.py): a foreign page whose name was rebound to 127.0.0.1 gets 403.
* CORS: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin
  (``ALLOWED_ORIGINS``, pages on this machine) is answered with the methods and headers clients
  need; from any other origin with 403 and no ``Access-Control-*`` header, so the browser never
  sends the request. Responses to allowed origins carry ``Access-Control-Allow-Origin`` and expose
  ``Retry-After``. No credentials mode: the gateway uses no cookies.
* A request whose body timed out (gateway/jsonbody.py) gets its 408 and then its connection closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.appkeys import SETTINGS
from gateway.auth.origin import check_dev_host, origin_allowed
from gateway.http_errors import error_response
from gateway.jsonbody import BODY_TIMED_OUT
from shared.errors import Forbidden, TTSError

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
# What the ElevenLabs and OpenAI clients and the native API send; X-Admin-Token stays off browsers.
ALLOW_HEADERS = ("content-type", "authorization", "xi-api-key", "accept")
EXPOSE_HEADERS = "Retry-After, Content-Length"
PREFLIGHT_MAX_AGE_S = "600"


@web.middleware
async def edge_middleware(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Dev-mode Host check and CORS preflights before any route runs."""
    try:
        if request.app[SETTINGS].auth_disabled:
            check_dev_host(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers \
                and "Origin" in request.headers:
            return _preflight(request)
    except TTSError as e:
        return error_response(e)
    response = await handler(request)
    if request.get(BODY_TIMED_OUT) and request.protocol is not None:
        # Send the 408, then hang up: aiohttp would otherwise keep reading ("lingering") the rest of
        # a body that is trickling on purpose for another 10 s.
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


def _preflight(request: web.Request) -> web.StreamResponse:
    origin = request.headers["Origin"]
    if not origin_allowed(origin, request.app[SETTINGS].allowed_origins):
        raise Forbidden("this page's origin may not call this gateway (see ALLOWED_ORIGINS)")
    if request.match_info.http_exception is not None and request.match_info.http_exception.status == 404:
        raise web.HTTPNotFound()
    asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOW_METHODS,
               "Access-Control-Allow-Headers": ", ".join(h for h in asked if h in ALLOW_HEADERS) or "content-type",
               "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S, "Vary": "Origin"}
    return web.Response(status=204, headers=headers)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers on responses to allowed origins."""
    origin = request.headers.get("Origin")
    if origin is None or "Access-Control-Allow-Origin" in response.headers:
        return
    if origin_allowed(origin, request.app[SETTINGS].allowed_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")


def install(app: web.Application) -> None:
    """Add the middleware and the response hook."""
    app.middlewares.append(edge_middleware)
    app.on_response_prepare.append(on_response_prepare)
