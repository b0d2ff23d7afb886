"""The emulator's mutable runtime state, shared by every handler through one typed app key."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from emulator.config import FAULT_FIELDS, HANDSHAKE_FIELDS, EmulatorConfig
from emulator.faults import FaultBudget
from emulator.limits import Concurrency, HandshakeBucket
from emulator.stats import Stats


class OpenSession(Protocol):
    """What the state needs of an open WebSocket session (emulator.ws_session.WsSession, which imports
    this module: the state names only this much of it, so the two do not import each other)."""

    @property
    def live_contexts(self) -> int:
        """Contexts whose final has not been sent yet."""
        ...

    def shutdown(self) -> None:
        """Close the socket as the emulator shuts down."""
        ...


class EmulatorState:
    """Current config (swapped whole), stats, fault budget and the open WebSocket sessions."""

    def __init__(self, config: EmulatorConfig) -> None:
        """Start from ``config``, which :meth:`reset` returns to."""
        self.initial_config = config
        self._config = config
        self.stats = Stats()
        self.fault_budget = FaultBudget(config.fault_sockets)
        self.handshakes = HandshakeBucket()
        self.concurrency = Concurrency()
        self.sessions: set[OpenSession] = set()

    @property
    def config(self) -> EmulatorConfig:
        """The config in force now; handlers read it at each decision, so changes apply mid-stream."""
        return self._config

    def set_config(self, config: EmulatorConfig | None = None, **changes: Any) -> EmulatorConfig:
        """Replace the config and/or apply ``changes``; a full replacement or a fault change re-arms the budget."""
        base = config if config is not None else self._config
        new = base.replace(**changes) if changes else base
        # Re-arming on every fault update lets a test say "drop the next N sockets" repeatedly.
        if config is not None or FAULT_FIELDS & changes.keys():
            self.fault_budget.rearm(new.fault_sockets)
        if config is not None or HANDSHAKE_FIELDS & changes.keys():
            self.handshakes.refill()
        self._config = new
        return new

    def reset_stats(self) -> None:
        """Zero the counters; the per-socket maximum restarts from the sockets open now."""
        self.stats.reset(max((s.live_contexts for s in self.sessions), default=0))

    def reset(self) -> None:
        """Back to the initial config, a re-armed fault budget and zeroed stats."""
        self.set_config(self.initial_config)
        self.reset_stats()


STATE_KEY = web.AppKey("emulator_state", EmulatorState)
