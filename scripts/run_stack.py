"""``python -m scripts.run_stack`` (``make run``): Redis, workers and the gateway, ready to speak.

The embedded default needs no configuration and no network: a throw-away ``redis-server`` on a
free port (unless ``REDIS_URL`` is given), ``WORKERS`` workers (default 1) on the local Piper voice,
and the gateway on ``GATEWAY_HOST:GATEWAY_PORT`` (default 127.0.0.1:8080) with auth disabled. With
``ELEVENLABS_API_KEY`` set the workers also run the ElevenLabs provider. Any variable of
``shared.settings`` given in the environment is passed through and wins over these defaults.

The command waits until the gateway's ``/readyz`` answers 200 with every worker live and each
worker's models loaded, prints ``open http://HOST:PORT``, and on Ctrl-C or SIGTERM stops the gateway
(it drains), then the workers, then Redis: SIGTERM, a grace period, SIGKILL for stragglers.

Once up, it supervises like compose's or Kubernetes' restart policy would: a gateway, worker or
embedded Redis that dies is restarted in place (same port, same environment) after a backoff
(0.5 s, doubling to 8 s), logged with its exit code or signal and its restart count, while the rest
keep serving (they already ride out a dead worker or a Redis restart). Only a crash loop stops the
run: more than ``RUN_RESTART_LIMIT`` (5) crashes of one process within ``RUN_RESTART_WINDOW_S``
(60 s), and then it says which process and why. A process that dies during start-up still stops
everything at once: that is a configuration error, not a crash to ride out.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from scripts.procs import Child, CrashLoop, Output, Restarts, describe_exit, stop_all
from shared.redis_server import RedisServer, RedisServerError, free_port
from shared.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8080
START_TIMEOUT_S = float(os.environ.get("RUN_START_TIMEOUT_S", "180"))


class StartupError(RuntimeError):
    """The stack could not be brought up; the message says why and what to do."""


@dataclass(frozen=True)
class StackConfig:
    """What to start, derived once from the environment."""

    host: str
    port: int
    workers: int
    redis_url: str | None  # None: start the embedded redis-server
    metrics_ports: tuple[int, ...]
    restart_limit: int
    restart_window_s: float
    child_env: Mapping[str, str] = field(repr=False)
    settings: Settings = field(repr=False)

    @property
    def open_url(self) -> str:
        """The address a person types into a browser."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"


def config_from_env(environ: Mapping[str, str]) -> StackConfig:
    """Fill in the embedded defaults, validate everything through ``Settings``, fail with the variable's name."""
    env = dict(environ)
    try:
        workers = int(env.get("WORKERS", "1"))
    except ValueError:
        raise SettingsError(f"WORKERS: cannot parse {env['WORKERS']!r} as int") from None
    if not 1 <= workers <= 32:
        raise SettingsError(f"WORKERS: value {workers} is out of range (1..32)")
    try:
        restart_limit = int(env.get("RUN_RESTART_LIMIT", "5"))
        restart_window_s = float(env.get("RUN_RESTART_WINDOW_S", "60"))
    except ValueError as e:
        raise SettingsError(f"RUN_RESTART_LIMIT / RUN_RESTART_WINDOW_S: {e}") from None
    if restart_limit < 0 or not 0 < restart_window_s < 86400:
        raise SettingsError("RUN_RESTART_LIMIT must be >= 0 and RUN_RESTART_WINDOW_S in (0, 86400)")
    env.setdefault("GATEWAY_HOST", "127.0.0.1")  # dev mode has no auth: local only unless asked
    env.setdefault("GATEWAY_PORT", str(DEFAULT_PORT))
    env.setdefault("AUTH_DISABLED", "true")
    if not env.get("PROVIDERS"):
        env["PROVIDERS"] = "local,elevenlabs" if env.get("ELEVENLABS_API_KEY") else "local"
    if not env.get("LOG_FORMAT") and sys.stdout.isatty():
        env["LOG_FORMAT"] = "console"  # children write to a pipe, which alone would make them pick JSON
    env["PYTHONUNBUFFERED"] = "1"
    redis_url = env.get("REDIS_URL") or None
    if redis_url is None:
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # placeholder for validation; replaced at start
    settings = Settings.from_env(env)
    if "WORKER_METRICS_PORT" in environ:
        ports = tuple(settings.worker_metrics_port + i for i in range(workers))
    else:
        ports = tuple(free_port() for _ in range(workers))
    return StackConfig(host=settings.gateway_host, port=settings.gateway_port, workers=workers,
                       redis_url=redis_url, metrics_ports=ports, restart_limit=restart_limit,
                       restart_window_s=restart_window_s, child_env=env, settings=settings)


class Stack:
    """The running processes of one ``make run``."""

    def __init__(self, config: StackConfig, output: Output) -> None:
        self.config = config
        self.output = output
        self.redis: RedisServer | None = None
        self.redis_url = config.redis_url or ""
        self.workers: list[Child] = []
        self.gateway: Child | None = None
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()

    def log(self, text: str) -> None:
        """A line from the run command itself."""
        self.output.line("stack", text)

    @property
    def children(self) -> list[Child]:
        """Every child process started so far, gateway first."""
        return ([self.gateway] if self.gateway else []) + self.workers

    def start(self) -> None:
        """Start Redis, the workers and the gateway (in that order, without waiting in between)."""
        cfg = self.config
        _check_port_free(cfg.host, cfg.port)
        if cfg.redis_url is None:
            self.redis = RedisServer().start()
            self.redis_url = self.redis.url
            self.output.line("redis", f"redis-server {self.redis.binary} on {self.redis_url} (pid "
                                      f"{self.redis.proc.pid if self.redis.proc else '?'}, no persistence)")
        else:
            self.log(f"using the given REDIS_URL (host {_redis_host(cfg.redis_url)})")
        env = {**cfg.child_env, "REDIS_URL": self.redis_url}
        for i, port in enumerate(cfg.metrics_ports, 1):
            name = f"worker.{i}" if cfg.workers > 1 else "worker"
            child = Child(name, [sys.executable, "-m", "worker"], {**env, "WORKER_METRICS_PORT": str(port)},
                          self.output, cwd=str(ROOT)).start()
            self.workers.append(child)
            self.log(f"started {name} (pid {child.pid}, metrics on :{port})")
        self.gateway = Child("gateway", [sys.executable, "-m", "gateway"], env, self.output,
                             cwd=str(ROOT)).start()
        self.log(f"started gateway (pid {self.gateway.pid}) on {cfg.host}:{cfg.port}")

    def wait_ready(self, timeout: float) -> None:
        """Until the gateway is ready, every worker heartbeats and each worker's models are loaded."""
        deadline = time.monotonic() + timeout
        base = f"http://{_connect_host(self.config.host)}:{self.config.port}"
        pending_workers = dict(zip(self.config.metrics_ports, self.workers, strict=True))
        last_status = ""
        while True:
            if self.stop_requested.is_set():
                raise KeyboardInterrupt
            self._check_alive()
            for port, child in list(pending_workers.items()):
                if _worker_ready(port):
                    self.log(f"{child.name} ready: models loaded")
                    del pending_workers[port]
            status, body = _get_json(f"{base}/readyz")
            live = body.get("workers", 0) if status == 200 else 0
            if status == 200 and live >= self.config.workers and not pending_workers:
                return
            if status:
                last_status = f"{status} {body.get('status', '')}".strip()
            if time.monotonic() > deadline:
                raise StartupError(f"not ready after {timeout:.0f}s (gateway /readyz: {last_status or 'no answer'}"
                                   f", workers still loading: {len(pending_workers)})")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for child in self.children:
            code = child.poll()
            if code is not None:
                child.finish()
                last = next((line.strip() for line in reversed(child.tail) if line.strip()), "(no output)")
                raise StartupError(f"{child.name} (pid {child.pid}) exited with code {code} during start-up: "
                                   f"{last}  (its full output is above)")
        if self.redis is not None and self.redis.proc is not None and self.redis.proc.poll() is not None:
            raise StartupError("redis-server exited during start-up")

    def watch(self) -> int:
        """Restart whatever dies until a stop is requested (0) or one process crash-loops (1)."""
        cfg = self.config
        restarts = {name: Restarts(cfg.restart_limit, cfg.restart_window_s)
                    for name in [c.name for c in self.children] + ["redis"]}
        due: dict[str, float] = {}  # name -> when its restart is due
        died_at: dict[str, float] = {}  # name -> when it died, until it serves again
        while not self.stop_requested.wait(0.1):
            now = time.monotonic()
            try:
                self._reap(restarts, due, died_at, now)
            except CrashLoop as e:
                self.log(f"{e}: stopping everything (its output is above; fix the cause, then make run again)")
                return 1
            except RedisServerError as e:
                self.log(f"redis-server could not be restarted ({e}): stopping everything")
                return 1
            for name, at in list(due.items()):
                if now >= at:
                    del due[name]
                    self._restart(name, restarts[name].total)
            for name, since in list(died_at.items()):
                if name not in due and self._serving(name):
                    del died_at[name]
                    self.log(f"{name} serving again {time.monotonic() - since:.1f}s after it died")
        return 0

    def _reap(self, restarts: dict[str, Restarts], due: dict[str, float], died_at: dict[str, float],
              now: float) -> None:
        for child in self.children:
            code = None if child.name in due else child.poll()
            if code is None:
                continue
            child.finish()
            how = describe_exit(code)
            try:
                delay = restarts[child.name].crashed(now)
            except CrashLoop as e:
                raise CrashLoop(f"{child.name} (pid {child.pid}) {how}; it {e}") from None
            self.log(f"{child.name} (pid {child.pid}) {how}: restart #{restarts[child.name].total} in {delay:.1f}s "
                     f"(the other processes keep serving)")
            due[child.name] = now + delay
            died_at.setdefault(child.name, now)
        redis = self.redis
        if redis is not None and redis.proc is not None and (code := redis.proc.poll()) is not None:
            pid = redis.proc.pid
            redis.stop()  # reap it and drop its directory: the new one starts empty, like the first
            how = describe_exit(code)
            try:
                delay = restarts["redis"].crashed(now)
            except CrashLoop as e:
                raise CrashLoop(f"redis-server (pid {pid}) {how}; it {e}") from None
            self.output.line("redis", f"redis-server (pid {pid}) {how}: restart #{restarts['redis'].total} on the "
                                      f"same port in {delay:.1f}s (the services reconnect by themselves)")
            due["redis"] = now + delay
            died_at.setdefault("redis", now)

    def _restart(self, name: str, count: int) -> None:
        if name == "redis":
            assert self.redis is not None
            self.redis.start()
            self.output.line("redis", f"restarted redis-server on {self.redis_url} (pid "
                                      f"{self.redis.proc.pid if self.redis.proc else '?'}), restart #{count}")
            return
        child = next(c for c in self.children if c.name == name)
        child.start()
        self.log(f"restarted {name} (pid {child.pid}), restart #{count}")

    def _serving(self, name: str) -> bool:
        """The restarted process answers its readiness probe (Redis: PING)."""
        if name == "redis":
            return self.redis is not None and self.redis.proc is not None and self.redis.proc.poll() is None
        if name == "gateway":
            return _get_json(f"http://{_connect_host(self.config.host)}:{self.config.port}/readyz")[0] == 200
        port = dict(zip((c.name for c in self.workers), self.config.metrics_ports, strict=True))[name]
        return _worker_ready(port)

    def stop(self) -> None:
        """Gateway first (it drains live contexts), then workers, then Redis."""
        grace = self.config.settings.drain_grace_s + 5
        if self.gateway is not None:
            stop_all([self.gateway], grace, self.log, self.hurry)
        stop_all(self.workers, grace, self.log, self.hurry)
        if self.redis is not None:
            self.redis.stop()
            self.output.line("redis", "stopped")
            self.redis = None

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """First Ctrl-C/SIGTERM: stop cleanly. Second: stop now (SIGKILL without waiting)."""
        if self.stop_requested.is_set():
            self.hurry.set()
            self.log("second signal: killing the remaining processes now")
            return
        self.stop_requested.set()
        self.log(f"{signal.Signals(signum).name}: stopping (press Ctrl-C again to kill at once)")


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise StartupError(f"cannot listen on {host}:{port} ({e.strerror}); is another gateway running? "
                               f"Pick another port with GATEWAY_PORT=...") from e


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _redis_host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0]  # never echo a password


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}
    except (OSError, ValueError):
        return 0, {}


def _worker_ready(port: int) -> bool:
    status, body = _get_json(f"http://127.0.0.1:{port}/readyz")
    if status != 200:
        return False
    providers = body.get("providers", {})
    return bool(providers) and all(p.get("model_loaded", True) for p in providers.values())


def _banner(stack: Stack, seconds: float) -> None:
    cfg = stack.config
    providers = ",".join(cfg.settings.providers)
    stack.log(f"ready in {seconds:.1f}s: {cfg.workers} worker(s), providers {providers}")
    if cfg.settings.auth_disabled:
        stack.log("!" * 72)
        stack.log("!! AUTH_DISABLED=true: development mode, no API key or token is checked.")
        stack.log(f"!! Anyone who can reach {cfg.host}:{cfg.port} may synthesize speech.")
        stack.log("!" * 72)
    if "elevenlabs" not in cfg.settings.providers:
        stack.log("local Piper voice only; set ELEVENLABS_API_KEY to add the ElevenLabs voices")
    stack.log(f"open {cfg.open_url}")


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the stack until Ctrl-C/SIGTERM; the exit code says whether it ran and stopped cleanly."""
    output = Output()
    try:
        config = config_from_env(os.environ if environ is None else environ)
    except SettingsError as e:
        output.line("stack", f"error: {e}")
        return 2
    stack = Stack(config, output)
    signal.signal(signal.SIGINT, stack.on_signal)
    signal.signal(signal.SIGTERM, stack.on_signal)
    began = time.monotonic()
    code = 0
    try:
        stack.start()
        stack.wait_ready(START_TIMEOUT_S)
        _banner(stack, time.monotonic() - began)
        code = stack.watch()
    except KeyboardInterrupt:
        stack.log("stopped during start-up")
    except (StartupError, RedisServerError) as e:
        stack.log(f"error: {e}")
        code = 1
    finally:
        stack.stop()
        stack.log("all processes stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
