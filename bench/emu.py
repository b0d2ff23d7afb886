"""``python -m bench.emu [emulator flags]``: the ElevenLabs emulator as its own process, on uvloop.

Same flags as ``python -m emulator``; uvloop only makes the stand-in upstream cheaper, so more of
the box's two cores are left to the processes under test.
"""

from __future__ import annotations

import sys

from emulator.__main__ import main

if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(main())
