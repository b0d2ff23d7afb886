"""Child processes for the run command: foreman-style prefixed output, process groups, clean stops.

Each child runs in its own session (process group), so the terminal's Ctrl-C reaches only the run
command, which then stops the children in order; on Linux each child also gets SIGTERM if the run
command itself dies without cleaning up (``PR_SET_PDEATHSIG``), so a killed ``make run`` leaves no
orphans behind.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from shared import child_process

_COLORS = ("36", "35", "33", "32", "34", "91", "96", "95")


class Output:
    """Writes lines prefixed by the name of the process they came from, one whole line at a time."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None, width: int = 9) -> None:
        self.stream = stream or sys.stdout
        if color is None:
            color = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = width
        self._lock = threading.Lock()
        self._codes: dict[str, str] = {}

    def line(self, name: str, text: str) -> None:
        """One line under ``name``'s prefix."""
        prefix = f"{name:<{self.width}}|"
        if self.color:
            code = self._codes.setdefault(name, "1" if name == "stack" else _COLORS[len(self._codes) % len(_COLORS)])
            prefix = f"\x1b[{code}m{prefix}\x1b[0m"
        body = "".join(f"{prefix} {part}\n" for part in text.split("\n"))
        with self._lock:
            try:
                self.stream.write(body)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # our own stdout went away (closed pipe): keep stopping the children regardless


class Child:
    """One long-running child process with its output pumped, prefixed, to an :class:`Output`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], output: Output,
                 cwd: str | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.output = output
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> Child:
        """Spawn in a new session with stdout and stderr merged into one prefixed stream."""
        self.proc = child_process.spawn(self.argv, self.env, stdout=subprocess.PIPE, cwd=self.cwd)
        self._pump = threading.Thread(target=self._read, name=f"pump-{self.name}", daemon=True)
        self._pump.start()
        return self

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        """Exit code, or None while running."""
        return None if self.proc is None else self.proc.poll()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.tail.append(text)
            self.output.line(self.name, text)
        self.proc.stdout.close()

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group (it and anything it spawned)."""
        if self.proc is not None:
            child_process.send(self.proc, sig, group=True)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the child has exited."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def finish(self) -> None:
        """Reap the child and let the pump drain its last lines."""
        if self.proc is not None:
            self.proc.wait()
        if self._pump is not None:
            self._pump.join(2.0)


def describe_exit(code: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL`` (Popen reports a signal as a negative code)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class CrashLoop(RuntimeError):
    """A process crashed too often within the window: restarting it again would only hide the fault."""


class Restarts:
    """Crash bookkeeping of one supervised process: exponential backoff and the give-up rule.

    A crash ``window_s`` seconds after the previous ones no longer counts towards the limit, so a
    process that crashes once a day is restarted for ever, while one that cannot stay up is not.
    """

    def __init__(self, limit: int, window_s: float, first_delay_s: float = 0.5, max_delay_s: float = 8.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.total = 0  # restarts since the run began (what the log line counts)
        self._recent: collections.deque[float] = collections.deque(maxlen=max(limit, 1) + 1)

    def crashed(self, now: float) -> float:
        """Record a crash; the delay before the restart, or :class:`CrashLoop` when over the limit."""
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        self._recent.append(now)
        if len(self._recent) > self.limit:
            raise CrashLoop(f"crashed {len(self._recent)} times within {self.window_s:.0f}s")
        self.total += 1
        return min(self.first_delay_s * 2 ** (len(self._recent) - 1), self.max_delay_s)


def stop_all(children: Sequence[Child], grace_s: float, log: Callable[[str], None],
             hurry: threading.Event | None = None) -> None:
    """SIGTERM every running child, wait up to ``grace_s``, then SIGKILL the stragglers' groups.

    ``hurry`` (set by a second Ctrl-C) cuts the wait short.
    """
    running = [c for c in children if c.poll() is None]
    for c in running:
        c.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while running and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        running = [c for c in running if not c.wait(0.05)]
    for c in running:
        log(f"{c.name} (pid {c.pid}) did not stop within {grace_s:.0f}s: SIGKILL")
        c.signal_group(signal.SIGKILL)
    for c in children:
        c.finish()
