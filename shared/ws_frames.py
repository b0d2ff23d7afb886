"""One ``send`` per WebSocket frame: a process-wide tweak of aiohttp's frame writer, made at process start.

aiohttp writes a frame whose payload exceeds ``aiohttp._websocket.writer.MSG_SIZE`` (16 KB) as two
``transport.write`` calls, header then payload, to spare one copy. Sockets run with TCP_NODELAY, so
each call is its own ``send`` syscall and its own TCP segment: every audio frame (24 KB for 500 ms of
pcm_24000) cost two of each, the largest item in the gateway's profile (``_write_websocket_frame``,
15-19 % own samples at 500-1,000 streams), and two packets and two reader wake-ups per ~30 KB frame of
the load-tuned emulator. Raising the threshold makes aiohttp join header and payload (one copy of the
frame, far cheaper than a syscall) and write them once. Not a byte on the wire changes.

``MSG_SIZE`` is a private ``Final`` of aiohttp: the tweak is guarded (a version without it keeps the
default behaviour, and says so in the log) and applied only by the entry points that want it
(``python -m gateway``, ``python -m bench.emu``), never on import: tests that run the gateway or the
emulator in-process keep aiohttp's default.
"""

from __future__ import annotations

from shared.logging import get_logger

log = get_logger(__name__)
# Above any frame the gateway or the emulator sends (an audio chunk is at most a few hundred KB, an
# emulator frame < 1 MiB); a larger one still goes out correctly, as two writes.
SINGLE_WRITE_MAX = 1 << 22


def write_frames_whole(limit: int = SINGLE_WRITE_MAX) -> bool:
    """Make aiohttp write each WebSocket frame up to ``limit`` bytes in one call; False if it cannot."""
    try:
        from aiohttp._websocket import writer
    except ImportError:
        current = None
    else:
        current = getattr(writer, "MSG_SIZE", None)
    if not isinstance(current, int):
        log.warning("ws_single_write_unavailable", hint="aiohttp lacks _websocket.writer.MSG_SIZE; "
                    "frames over 16 KB go out as two writes")
        return False
    writer.MSG_SIZE = max(current, limit)  # type: ignore[misc]  # Final upstream; see the module docstring
    return True
