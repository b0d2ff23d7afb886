"""The pool's sockets by key, and the questions placement and upkeep ask about them.

A :class:`SocketSet` is every socket of one :class:`~.options.SocketKey` (voice, model, format:
contexts of different keys cannot share a socket); :class:`Sockets` is the pool's map of them, a
key dropped as soon as its last socket goes (every key a client names could otherwise stay).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .connection import SocketState, UpstreamSocket
from .options import SocketKey


class SocketSet:
    """The sockets of one key (dialling, open or draining; a closed one is removed by the pool)."""

    def __init__(self, key: SocketKey) -> None:
        """An empty set for ``key``."""
        self.key = key
        self._socks: list[UpstreamSocket] = []

    def __iter__(self) -> Iterator[UpstreamSocket]:
        return iter(list(self._socks))

    def __len__(self) -> int:
        return len(self._socks)

    def __contains__(self, sock: object) -> bool:
        return sock in self._socks

    def add(self, sock: UpstreamSocket) -> None:
        """Track ``sock`` (just created, dialling)."""
        self._socks.append(sock)

    def remove(self, sock: UpstreamSocket) -> None:
        """Stop tracking ``sock`` (idempotent)."""
        if sock in self._socks:
            self._socks.remove(sock)

    def _takes_contexts(self, sock: UpstreamSocket) -> bool:
        return not sock.draining and sock.state is not SocketState.CLOSED

    def best_slot(self, cap: int, pack: bool = False) -> UpstreamSocket | None:
        """Where the next context goes: open before dialling, fresh before refreshing, then least loaded
        (``pack``: most loaded, so that sockets kept warm ahead of demand stay idle until needed, and a
        surplus one can close at its idle deadline instead of carrying one context forever)."""
        best: UpstreamSocket | None = None
        best_rank: tuple[bool, bool, int] | None = None
        for sock in self._socks:
            if not self._takes_contexts(sock) or sock.load >= cap:
                continue
            # An open socket being refreshed still beats one dialling: a context there waits for nothing.
            rank = (sock.state is not SocketState.OPEN, sock.replacing, -sock.load if pack else sock.load)
            if best_rank is None or rank < best_rank:
                best, best_rank = sock, rank
        return best

    def free_slots(self, cap: int) -> int:
        """Slots left on sockets that take contexts (dialling ones included)."""
        return sum(cap - s.load for s in self._socks if self._takes_contexts(s))

    def open_count(self) -> int:
        """Sockets whose handshake completed."""
        return sum(1 for s in self._socks if s.state is SocketState.OPEN)

    def dialling(self) -> bool:
        """Is any socket still connecting (or backing off before it dials)?"""
        return any(s.state is SocketState.CONNECTING for s in self._socks)

    def lasting(self, besides: UpstreamSocket | None = None) -> int:
        """Sockets that will stay (neither draining nor being refreshed), ``besides`` not counted."""
        return sum(1 for s in self._socks if s is not besides and not s.draining and not s.replacing)

    def open_besides(self, sock: UpstreamSocket) -> int:
        """Open, non-draining sockets other than ``sock``: what remains if ``sock`` closes now."""
        return sum(1 for s in self._socks if s is not sock and s.state is SocketState.OPEN and not s.draining)

    def spare_slots(self, cap: int) -> int:
        """Free slots on open sockets that take contexts and stay: where a context goes without a handshake."""
        return sum(cap - s.load for s in self._socks
                   if s.state is SocketState.OPEN and not s.draining and not s.replacing and s.load < cap)

    def refreshed(self) -> list[UpstreamSocket]:
        """Idle sockets being refreshed (make-before-break), ready to go once a sibling is open."""
        return [s for s in self._socks if s.replacing and s.load == 0]

    def idle(self) -> list[UpstreamSocket]:
        """Open sockets without a context."""
        return [s for s in self._socks if s.state is SocketState.OPEN and s.load == 0]


class Sockets:
    """Every tracked socket of the pool, by key."""

    def __init__(self) -> None:
        """No sockets yet."""
        self._sets: dict[SocketKey, SocketSet] = {}

    def __len__(self) -> int:
        """Sockets tracked (every state)."""
        return sum(len(s) for s in self._sets.values())

    def of(self, key: SocketKey) -> SocketSet:
        """The set for ``key`` (an empty, untracked one when the key has no socket)."""
        return self._sets.get(key) or SocketSet(key)

    @property
    def keys(self) -> int:
        """Keys with at least one socket."""
        return len(self._sets)

    def add(self, sock: UpstreamSocket) -> None:
        """Track ``sock`` under its key."""
        found = self._sets.get(sock.key)
        if found is None:
            found = self._sets[sock.key] = SocketSet(sock.key)
        found.add(sock)

    def remove(self, sock: UpstreamSocket) -> None:
        """Stop tracking ``sock``; its key goes with its last socket (idempotent)."""
        found = self._sets.get(sock.key)
        if found is not None:
            found.remove(sock)
            if not found:
                del self._sets[sock.key]

    def clear(self) -> None:
        """Forget every socket (shutdown)."""
        self._sets.clear()

    def all(self) -> list[UpstreamSocket]:
        """Every tracked socket (a snapshot: callers may remove while iterating)."""
        return [s for found in self._sets.values() for s in found]

    def evictable(self, key: SocketKey, keep: SocketKey | None) -> UpstreamSocket | None:
        """An idle socket of another key to close for ``key``: ``keep``'s (the prewarmed default) last,
        then the longest idle."""
        idle = [s for k, found in self._sets.items() if k != key for s in found.idle()]
        return min(idle, key=lambda s: (s.key == keep, s.last_sent)) if idle else None

    def spare_slots(self, cap: int) -> int:
        """Free slots on open, lasting sockets of every key."""
        return sum(found.spare_slots(cap) for found in self._sets.values())

    def loads(self) -> Iterator[tuple[SocketKey, int]]:
        """Contexts holding a slot, by key (keys with none left out)."""
        for key, found in self._sets.items():
            load = sum(s.load for s in found._socks)
            if load:
                yield key, load

    def lasting_slots(self, cap: int) -> int:
        """Free slots on sockets that take contexts and stay (dialling ones included), every key."""
        return sum(cap - s.load for s in self.all() if not s.draining and not s.replacing
                   and s.state is not SocketState.CLOSED)

    def state_counts(self) -> dict[str, int]:
        """Sockets by state for metrics and status (draining counted apart)."""
        counts = {"connecting": 0, "open": 0, "draining": 0}
        for s in self.all():
            if s.state is not SocketState.CLOSED:
                counts["draining" if s.draining else s.state.value] += 1
        return counts

    def describe(self) -> list[dict[str, Any]]:
        """One line per socket for /admin/status (no secrets: the key's voice and format only)."""
        now = time.monotonic()
        return [{"id": s.sid, "state": "draining" if s.draining else s.state.value, "contexts": s.load,
                 "refreshing": s.replacing, "age_s": round(now - (s.opened_at or s.created_at), 1), "voice_id": s.key.voice_id,
                 "format": s.key.output_format} for s in self.all()]
