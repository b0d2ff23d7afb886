"""Service processes for tests: ``python -m gateway`` / ``python -m worker`` with their own env and logs.

Each process gets a fresh environment (the test's settings, nothing inherited that could point it
at another Redis), its stdout and stderr captured to files under a tmp dir, readiness probed over
HTTP, and a stop that is SIGTERM first and SIGKILL only if the grace runs out (shared/child_process.py,
which also makes it die with the test run). At teardown every
captured log is scanned for the failure modes that sank this product's predecessor (coroutines never
awaited, tasks whose exceptions nobody read, unclosed resources, tracebacks); a hit fails the test.

Use the ``procs`` fixture (tests/ops/conftest.py registers it)::

    async def test_x(procs: Procs, redis_url: str) -> None:
        worker = procs.worker(redis_url)
        gw = procs.gateway(redis_url)
        await procs.ready(worker, gw)
        ...
        gw.terminate()          # SIGTERM; ``await gw.wait_exit(10)`` for the exit code
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from shared import child_process
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
# What must never appear in a service's log (DESIGN §3), as regexes.
BAD_LOG_PATTERNS = (r"was never awaited", r"no running event loop", r"Task exception was never retrieved",
                    r"Unclosed", r"Traceback")
# Variables a child inherits from the test runner; everything else it gets explicitly.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")


@dataclass
class Proc:
    """One child process and its captured output."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    # Log regexes this process may legitimately print (e.g. a fault test's expected traceback).
    allow: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] | None = None
    killed: bool = False
    # A non-zero exit the test provokes on purpose (e.g. 2 for a configuration error).
    expected_exit: int | None = None
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def stdout_path(self) -> Path:
        """Captured stdout."""
        return self.log_dir / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        """Captured stderr (structlog writes here)."""
        return self.log_dir / f"{self.name}.stderr.log"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port> of the process's HTTP listener."""
        assert self.port is not None, f"{self.name} has no port"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        """Spawn the process in its own session, output to files."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Kept open for the life of the child; closed in stop().
        out, err = open(self.stdout_path, "ab"), open(self.stderr_path, "ab")  # noqa: SIM115
        self._files = [out, err]
        self.popen = child_process.spawn(self.argv, self.env, stdout=out, stderr=err, cwd=ROOT)
        return self

    def running(self) -> bool:
        """True until the process exits."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code, None while running."""
        return None if self.popen is None else self.popen.poll()

    def send(self, sig: signal.Signals) -> None:
        """Deliver a signal to the process (not its group: a service handles its own children)."""
        if self.popen is not None:
            child_process.send(self.popen, sig)

    def terminate(self) -> None:
        """SIGTERM: the service's graceful drain."""
        self.send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL on purpose (a fault test): not reported as an unclean stop."""
        self.killed = True
        self.send(signal.SIGKILL)

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the exit code (None if still running)."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.returncode

    def stop(self, grace_s: float = 15.0) -> bool:
        """SIGTERM, wait, then SIGKILL; True when it exited within the grace (blocking, for teardown)."""
        if self.popen is None:
            return True
        clean = child_process.stop(self.popen, grace_s, kill_wait_s=10)
        for f in self._files:
            f.close()
        self._files = []
        return clean

    def output(self) -> str:
        """Everything captured so far (stdout then stderr)."""
        parts = []
        for p in (self.stdout_path, self.stderr_path):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def json_lines(self) -> list[dict[str, Any]]:
        """The structlog JSON records of stderr (non-JSON lines are skipped)."""
        out = []
        for line in self.stderr_path.read_text(errors="replace").splitlines() if self.stderr_path.exists() else []:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """JSON log records whose ``event`` is ``name``."""
        return [r for r in self.json_lines() if r.get("event") == name]

    def problems(self) -> list[str]:
        """Log lines matching a bad pattern that the process was not allowed to print."""
        allowed = [re.compile(a) for a in self.allow]
        hits = []
        for line in self.output().splitlines():
            for pat in BAD_LOG_PATTERNS:
                if re.search(pat, line) and not any(a.search(line) for a in allowed):
                    hits.append(f"{self.name}: {line[:500]}")
                    break
        return hits

    async def wait_http(self, path: str = "/readyz", timeout: float = 60.0, status: int = 200) -> dict[str, Any]:
        """Poll ``path`` until it answers ``status``; returns its JSON body. Fails fast if the process dies."""
        deadline = time.monotonic() + timeout
        last: Any = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not self.running():
                    raise AssertionError(f"{self.name} exited with {self.returncode} before it was ready:\n"
                                         f"{self.output()[-3000:]}")
                try:
                    async with http.get(self.base_url + path) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status == status:
                            return body if isinstance(body, dict) else {"body": body}
                        last = (resp.status, body)
                except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                    last = type(e).__name__
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name}: {path} not {status} within {timeout}s (last: {last})\n"
                             f"{self.output()[-3000:]}")


class Procs:
    """Starts service processes for one test and checks them all at teardown."""

    def __init__(self, log_dir: Path, base_env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []
        inherited = {k: v for k, v in os.environ.items() if k in _INHERITED}
        self.base_env = {**inherited, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                         # Python's own warnings (unclosed transports, never-awaited coroutines) go to stderr; arq 0.28
                         # (pinned) calls redis' deprecated close() at shutdown, a known and harmless one.
                         "PYTHONWARNINGS": "default,ignore:Call to deprecated close:DeprecationWarning",
                         "LOG_FORMAT": "json",
                         **(base_env or {})}

    def start(self, name: str, module: str, env: Mapping[str, str], port: int | None = None,
              allow: Iterable[str] = (), args: Iterable[str] = ()) -> Proc:
        """``python -m module [args]`` with ``base_env`` + ``env``."""
        if any(p.name == name for p in self.started):
            raise ValueError(f"a process named {name!r} was already started in this test")
        proc = Proc(name=name, argv=[sys.executable, "-m", module, *args], env={**self.base_env, **env},
                    log_dir=self.log_dir, port=port, allow=tuple(allow))
        self.started.append(proc.start())
        return proc

    def gateway(self, redis_url: str, name: str = "gateway", **env: Any) -> Proc:
        """A gateway on a free port (AUTH_DISABLED unless overridden)."""
        port = free_port()
        full = {"REDIS_URL": redis_url, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
                "AUTH_DISABLED": "true", **_strs(env)}
        return self.start(name, "gateway", full, port=port)

    def worker(self, redis_url: str, name: str = "worker", **env: Any) -> Proc:
        """A worker with the local voice and its metrics/health port on a free port."""
        port = free_port()
        full = {"REDIS_URL": redis_url, "WORKER_METRICS_PORT": str(port), "PROVIDERS": "local",
                "POOL_MIN_SOCKETS": "0", **_strs(env)}
        return self.start(name, "worker", full, port=port)

    def emulator(self, name: str = "emulator", **config: Any) -> Proc:
        """The ElevenLabs emulator on a free port; ``config`` are EmulatorConfig fields (``ttfb_ms=150``).

        Its ``/readyz`` does not exist: wait with ``await proc.wait_http("/_emulator/health")`` (``ready``
        does that for it). Faults are injected at runtime with ``POST /_emulator/config``.
        """
        port = free_port()
        args = ["--host", "127.0.0.1", "--port", str(port)]
        for key, value in config.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            elif isinstance(value, (list, tuple, set, frozenset)):
                args += [a for v in value for a in (flag, str(v))]
            else:
                args += [flag, str(value)]
        return self.start(name, "emulator", {}, port=port, args=args)

    async def ready(self, *procs: Proc, timeout: float = 90.0) -> None:
        """Wait until every process answers /readyz (the emulator: /_emulator/health) with 200."""
        await asyncio.gather(*(p.wait_http("/_emulator/health" if p.argv[2:3] == ["emulator"] else "/readyz",
                                           timeout) for p in procs))

    def finish(self, grace_s: float = 20.0) -> list[str]:
        """Stop every process still running; returns every problem found (unclean stops, bad log lines)."""
        problems: list[str] = []
        for proc in self.started:
            if not proc.stop(grace_s) and not proc.killed:
                problems.append(f"{proc.name}: did not exit within {grace_s}s of SIGTERM (SIGKILLed)")
            elif proc.returncode not in (0, proc.expected_exit) and not proc.killed:
                problems.append(f"{proc.name}: exited with {proc.returncode}")
        for proc in self.started:
            problems.extend(proc.problems())
        return problems


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Service processes for this test; teardown stops them and fails on unclean stops or bad log lines.

    Re-export it in a conftest (``from tests.support.procs import procs  # noqa: F401``).
    """
    group = Procs(tmp_path / "logs")
    yield group
    problems = group.finish()
    if problems:
        pytest.fail("service processes misbehaved (logs in " + str(group.log_dir) + "):\n" + "\n".join(problems),
                    pytrace=False)


def _strs(env: Mapping[str, Any]) -> dict[str, str]:
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in env.items()}
