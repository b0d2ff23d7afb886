"""Counters a test reads to assert what traffic reached the emulator (e.g. none, or never > 5 contexts)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Live counters; ``*_active`` are gauges of current state and survive :meth:`reset`."""

    ws_connections_opened: int = 0
    ws_connections_active: int = 0
    ws_connections_by_endpoint: Counter[str] = field(default_factory=Counter)
    contexts_opened: int = 0
    contexts_active: int = 0
    max_active_contexts_per_socket: int = 0
    context_cap_rejections: int = 0
    messages_received: Counter[str] = field(default_factory=Counter)
    characters_synthesized: int = 0
    audio_chunks_sent: int = 0
    audio_bytes_sent: int = 0
    finals_sent: int = 0
    errors_sent: Counter[str] = field(default_factory=Counter)
    close_codes_sent: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)
    http_requests: Counter[str] = field(default_factory=Counter)
    handshakes_refused: int = 0  # over handshake_rate (not counted in ws_connections_opened)
    concurrency_refusals: Counter[str] = field(default_factory=Counter)  # by endpoint: ws / http
    max_concurrent_requests_seen: int = 0

    @property
    def http_requests_total(self) -> int:
        """All HTTP API requests (control endpoints excluded)."""
        return sum(self.http_requests.values())

    @property
    def upstream_requests(self) -> int:
        """WebSocket connections plus HTTP API requests: 0 means no upstream traffic happened."""
        return self.ws_connections_opened + self.http_requests_total

    def observe_socket_contexts(self, active_on_socket: int) -> None:
        """Record a socket's current live-context count for the all-time per-socket maximum."""
        self.max_active_contexts_per_socket = max(self.max_active_contexts_per_socket, active_on_socket)

    def reset(self, active_contexts_per_socket: int = 0) -> None:
        """Zero every counter; gauges keep describing the sockets still open."""
        fresh = Stats(
            ws_connections_active=self.ws_connections_active,
            contexts_active=self.contexts_active,
            max_active_contexts_per_socket=active_contexts_per_socket,
        )
        self.__dict__.update(fresh.__dict__)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable copy (what ``GET /_emulator/stats`` returns)."""
        data: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            data[name] = {str(k): v for k, v in value.items()} if isinstance(value, Counter) else value
        data["http_requests_total"] = self.http_requests_total
        data["upstream_requests"] = self.upstream_requests
        return data
