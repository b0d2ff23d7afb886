"""Keeping the pool's sockets alive and fresh (a mixin of the pool, run every tick).

Initialised contexts get per-context keep-alives. An idle socket (no contexts) is never pinged,
because every message without a ``context_id`` targets a server-side default context that may take
a slot; instead, shortly before its inactivity deadline it is refreshed make-before-break (a
replacement is dialled, then the idle one is closed by us), so the prewarmed minimum never lapses
and the server never closes a socket for inactivity. Sockets past ``pool_max_socket_age_s`` drain
(no new contexts, existing ones finish) and are replaced the same way.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from shared.logging import get_logger
from shared.metrics import POOL_RECONNECTS
from shared.settings import Settings

from .connection import SocketState, UpstreamSocket
from .options import SocketKey
from .sockets import Sockets

log = get_logger(__name__)


class Upkeep:
    """The pool's maintenance tick (``SocketPool`` provides the state and the actions)."""

    settings: Settings
    provider: str
    default_key: SocketKey | None
    keepalive_s: float
    refresh_after_s: float
    _tick_s: float
    _sockets: Sockets
    _closed: bool
    _session: aiohttp.ClientSession | None

    def _open(self, key: SocketKey) -> UpstreamSocket:
        raise NotImplementedError

    def _retire(self, sock: UpstreamSocket, why: str) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def rest_idle(self, sock: UpstreamSocket, now: float) -> None:
        """Let quiet contexts on ``sock`` give their permits back (the pool implements it)."""
        raise NotImplementedError

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("upstream_pool_tick_failed")

    def _tick(self, now: float) -> None:
        max_age = self.settings.pool_max_socket_age_s
        for sock in self._sockets.all():
            if sock.state is SocketState.OPEN:
                sock.send_keepalives(now, self.keepalive_s)
                self.rest_idle(sock, now)
                if not sock.draining and sock.opened_at is not None and now - sock.opened_at >= max_age:
                    sock.draining = True
                    POOL_RECONNECTS.labels(self.provider, "max_age").inc()
                    log.info("upstream_socket_aged", socket=sock.sid, live_contexts=sock.load)
                idle = sock.load == 0 and not sock.draining and not sock.replacing
                if idle and now - sock.last_sent >= self.refresh_after_s:
                    if self._needed(sock):
                        sock.replacing = True
                        POOL_RECONNECTS.labels(self.provider, "idle_refresh").inc()
                    else:
                        self._retire(sock, "idle")
                        continue
            if sock.load == 0 and (sock.draining or (sock.replacing and self._replaced(sock))):
                self._retire(sock, "drained")
            elif sock.draining and not any(c.live for c in sock.contexts.values()) \
                    and now - sock.last_received >= self.settings.upstream_first_audio_timeout_s:
                # Only abandoned contexts whose finals never came: closing the socket is the only way
                # to get their slots back.
                self._retire(sock, "stuck")
        self._ensure_min()
        self._pump()

    def _needed(self, sock: UpstreamSocket) -> bool:
        """Would closing ``sock`` drop its key below the prewarmed minimum?"""
        if sock.key != self.default_key:
            return False
        return self._sockets.of(sock.key).lasting(besides=sock) < self.settings.pool_min_sockets

    def _replaced(self, sock: UpstreamSocket) -> bool:
        """Are enough other sockets of its key open that closing ``sock`` keeps the minimum?"""
        wanted = self.settings.pool_min_sockets if sock.key == self.default_key else 0
        return self._sockets.of(sock.key).open_besides(sock) >= max(1, wanted)

    def _ensure_min(self) -> None:
        key = self.default_key
        if key is None or self._closed or self._session is None:
            return
        have = self._sockets.of(key).lasting()
        while have < self.settings.pool_min_sockets and len(self._sockets) < self.settings.pool_max_sockets:
            self._open(key)
            have += 1
