"""``python -m bench.emu [emulator flags]``: the ElevenLabs emulator as its own process, tuned for load.

Same flags as ``python -m emulator``. Two process-wide tweaks make the stand-in upstream cheaper, so
more of the box is left to the processes under test; neither changes a byte on the wire:

* uvloop;
* a lazier cyclic garbage collector: with a thousand sockets' tasks and futures alive, each full
  collection walked all of them (5 % of the process's samples); the start-up heap is frozen out
  of the walk and young collections run 50x less often (reference counting frees the rest);
* aiohttp writes a WebSocket frame larger than 16 KB as two ``send`` calls (header, then payload)
  to avoid copying it. With TCP_NODELAY each call is its own segment, so every ~30 KB audio frame
  cost two packets and two wake-ups of the reader; one copy is cheaper than that
  (``shared/ws_frames.py``, the gateway's tweak). Only this process is changed (tests that run the
  emulator in-process keep aiohttp's default).
"""

from __future__ import annotations

import gc
import sys

from emulator.__main__ import main

from shared.ws_frames import write_frames_whole


def _tune() -> None:
    gc.freeze()
    gc.set_threshold(35_000, 20, 20)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    write_frames_whole()  # a future aiohttp without the knob: default behaviour, said in the log


if __name__ == "__main__":
    _tune()
    sys.exit(main())
