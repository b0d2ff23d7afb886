"""Run the emulator on a real port inside the current event loop (for tests) or as the main program."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.state import EmulatorState
from emulator.stats import Stats

DEFAULT_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"
_SHUTDOWN_TIMEOUT_S = 5.0


def _query(params: dict[str, Any]) -> str:
    clean = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}
    return f"?{urlencode(clean)}" if clean else ""


class RunningEmulator:
    """Handle on a started emulator: its URLs, live stats and runtime config."""

    def __init__(self, state: EmulatorState, host: str, port: int) -> None:
        """Describe the emulator serving ``state`` on ``host:port``."""
        self.state = state
        self.host = host
        self.port = port
        self.http_url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}"

    @property
    def stats(self) -> Stats:
        """Live counters (the same object the handlers update)."""
        return self.state.stats

    @property
    def config(self) -> EmulatorConfig:
        """The config in force."""
        return self.state.config

    def set_config(self, config: EmulatorConfig | None = None, **changes: Any) -> EmulatorConfig:
        """Replace the config and/or change fields; fault changes re-arm ``fault_sockets``."""
        return self.state.set_config(config, **changes)

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.state.reset_stats()

    def reset(self) -> None:
        """Start-up config, re-armed faults, zeroed stats."""
        self.state.reset()

    async def wait_until(self, predicate: Callable[[Stats], bool], timeout: float = 2.0) -> None:
        """Wait until ``predicate(stats)`` holds (server-side bookkeeping trails the client by a moment)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.stats):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"emulator stats never satisfied the condition: {self.stats.snapshot()}")
            await asyncio.sleep(0.005)

    def multi_stream_url(self, voice_id: str = DEFAULT_VOICE_ID, **query: Any) -> str:
        """``ws://.../v1/text-to-speech/{voice_id}/multi-stream-input?...``."""
        return f"{self.ws_url}/v1/text-to-speech/{voice_id}/multi-stream-input{_query(query)}"

    def stream_input_url(self, voice_id: str = DEFAULT_VOICE_ID, **query: Any) -> str:
        """``ws://.../v1/text-to-speech/{voice_id}/stream-input?...``."""
        return f"{self.ws_url}/v1/text-to-speech/{voice_id}/stream-input{_query(query)}"

    def tts_url(self, voice_id: str = DEFAULT_VOICE_ID, suffix: str = "", **query: Any) -> str:
        """An HTTP TTS URL; ``suffix`` is ``""``, ``"/stream"``, ``"/with-timestamps"`` or ``"/stream/with-timestamps"``."""
        return f"{self.http_url}/v1/text-to-speech/{voice_id}{suffix}{_query(query)}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 = a free port chosen by the OS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on ``host:port`` (default: a free port) for the duration of the block."""
    state = EmulatorState(config or EmulatorConfig())
    runner = web.AppRunner(create_app(state=state), shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        sock = bind_socket(host, port)
        site = web.SockSite(runner, sock)
        await site.start()
        yield RunningEmulator(state, host, sock.getsockname()[1])
    finally:
        await runner.cleanup()
