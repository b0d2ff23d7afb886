"""Children that die with their parent: the one ``preexec_fn`` every supervisor here passes to Popen.

On Linux a child started with ``preexec_fn=die_with_parent`` gets SIGTERM when the thread that
spawned it dies (``PR_SET_PDEATHSIG``), so a killed test run, bench or ``make run`` leaves no
orphaned redis-server, gateway or worker behind. Elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# Resolved in the parent: between fork and exec the child must not load libraries or import modules,
# which is also why passing this as ``preexec_fn`` is safe in a threaded parent (ruff's PLW1509).
_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """In the child, between fork and exec: ask Linux to SIGTERM it when its parent dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
