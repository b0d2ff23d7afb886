"""Child processes of every supervisor here (``make run``, bench/, the tests): start, signal, stop.

One way to do it, so the three callers (scripts/procs.py, bench/procs.py, tests/support/procs.py)
differ only in what they do with a child's output and how they probe its readiness:

- :func:`spawn` starts the child in its own session (process group), so a terminal's Ctrl-C reaches
  only the supervisor, with stdin from /dev/null; on Linux the child also gets SIGTERM when the thread
  that spawned it dies (``PR_SET_PDEATHSIG``), so a killed test run, bench or ``make run`` leaves no
  orphaned redis-server, gateway or worker behind.
- :func:`send` signals the child, or its whole group (it and anything it spawned).
- :func:`stop` is SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
# What Popen accepts for stdout/stderr: a file, a descriptor, or subprocess.PIPE/STDOUT/DEVNULL.
Sink = IO[bytes] | int | None


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: between fork and exec the child must not load libraries or import modules,
# which is also why passing this as ``preexec_fn`` is safe in a threaded parent (ruff's PLW1509).
_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """In the child, between fork and exec: ask Linux to SIGTERM it when its parent dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def spawn(argv: Sequence[str], env: Mapping[str, str], stdout: Sink, stderr: Sink = subprocess.STDOUT,
          cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with exactly ``env``; it dies with its parent (see module doc)."""
    return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=True,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 (one pre-resolved syscall)


def send(popen: subprocess.Popen[bytes], sig: signal.Signals, group: bool = False) -> None:
    """Deliver ``sig`` to the child, or with ``group`` to its whole process group; gone is no error.

    A group is signalled even after its leader exited: what the leader spawned may still run.
    """
    try:
        if group:
            os.killpg(popen.pid, sig)
        elif popen.poll() is None:
            popen.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(popen: subprocess.Popen[bytes], grace_s: float, group: bool = False,
         kill_wait_s: float | None = None) -> bool:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL and reap; True when it exited within the grace.

    ``kill_wait_s`` bounds the wait after SIGKILL (None: until reaped).
    """
    if popen.poll() is not None:
        return True
    send(popen, signal.SIGTERM, group)
    try:
        popen.wait(grace_s)
        return True
    except subprocess.TimeoutExpired:
        send(popen, signal.SIGKILL, group)
        popen.wait(kill_wait_s)
        return False
