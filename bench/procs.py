"""Processes under test, each its own OS process: redis-server, emulator, proxy, worker(s), gateway.

Every child writes its output to a log file, runs in its own process group, dies with the bench
(``PR_SET_PDEATHSIG``) and is stopped by pid. A :class:`Sampler` thread reads each process's CPU
and RSS with psutil so a measured window can report what every process cost.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shared import child_process
from shared.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VOICE = "21m00Tcm4TlvDq8ikWAM"


@dataclass
class Proc:
    """One child process and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """Its pid."""
        return self.popen.pid

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        """Last lines of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL."""
        child_process.stop(self.popen, grace)


def spawn(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> Proc:
    """Start ``argv`` with its output in ``log_dir/name.log``."""
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as out:
        popen = child_process.spawn(argv, full_env, stdout=out, cwd=cwd or ROOT)
    return Proc(name, popen, log)


def wait_for_line(proc: Proc, needle: str, timeout: float = 60.0) -> str:
    """Wait until the child's log contains ``needle``; returns that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        for line in proc.log.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body, (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


@dataclass
class EmulatorOpts:
    """The upstream's behaviour, the same for every target of a run."""

    connect_delay_ms: float = 300.0
    ttfb_ms: float = 150.0
    realtime_factor: float = 1.0
    chunk_ms: float = 500.0
    ms_per_char: float = 60.0
    # Later chunks on a 5 ms tick (emulator/generation.py:on_grid): one wake-up serves many streams.
    # A chunk is up to 5 ms late, a quarter of the player's 20 ms jitter allowance; TTFA is untouched.
    pacing_grid_ms: float = 5.0
    # The provider's refusals (see services/emulator/limits.py); None = off, as the real API at low load.
    handshake_rate: float | None = None
    handshake_burst: int | None = None
    max_concurrent_requests: int | None = None

    def limit_flags(self) -> list[str]:
        """Emulator flags for the refusals that are set."""
        flags: list[str] = []
        for name in ("handshake_rate", "handshake_burst", "max_concurrent_requests"):
            value = getattr(self, name)
            if value is not None:
                flags += ["--" + name.replace("_", "-"), str(value)]
        return flags


def start_emulator(log_dir: Path, opts: EmulatorOpts) -> tuple[Proc, str]:
    """The emulator as its own process (uvloop); returns it and its base URL."""
    port = free_port()
    proc = spawn("emulator", [PY, "-m", "bench.emu", "--port", str(port),
                              "--connect-delay-ms", str(opts.connect_delay_ms), "--ttfb-ms", str(opts.ttfb_ms),
                              "--realtime-factor", str(opts.realtime_factor), "--chunk-ms", str(opts.chunk_ms),
                              "--ms-per-char", str(opts.ms_per_char), "--pacing-grid-ms", str(opts.pacing_grid_ms),
                              "--inactivity-timeout-default", "180", *opts.limit_flags()], log_dir)
    wait_for_line(proc, "emulator listening on")
    return proc, f"http://127.0.0.1:{port}"


def start_proxy(log_dir: Path, emulator_url: str) -> tuple[Proc, str]:
    """Baseline (2): the fresh-socket-per-request proxy."""
    port = free_port()
    proc = spawn("proxy", [PY, "-m", "bench.proxy", "--port", str(port), "--upstream", emulator_url], log_dir)
    wait_for_line(proc, "proxy listening on")
    for _ in range(100):
        if _port_open(port):
            break
        time.sleep(0.05)
    return proc, f"ws://127.0.0.1:{port}/v1/ws"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    """Gateway(s), worker(s) and the redis-server they share."""

    redis: RedisServer
    gateways: list[Proc]
    workers: list[Proc]
    base_urls: list[str]
    procs: dict[str, int] = field(default_factory=dict)

    @property
    def gateway(self) -> Proc:
        """The first gateway (the only one unless the stack was started with several)."""
        return self.gateways[0]

    @property
    def base_url(self) -> str:
        """The first gateway's base URL."""
        return self.base_urls[0]

    def stop(self) -> None:
        """Gateways first (they drain), then workers, then Redis."""
        for g in self.gateways:
            g.stop()
        for w in self.workers:
            w.stop()
        self.redis.stop()


def stack_env(redis_url: str, emulator_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Settings for a benchmark stack: the ElevenLabs provider pointed at the emulator, no limits
    that a capacity test would hit before the machine does."""
    env = {
        "REDIS_URL": redis_url, "GATEWAY_HOST": "127.0.0.1", "AUTH_DISABLED": "true",
        "PROVIDERS": "elevenlabs", "ELEVENLABS_API_KEY": "bench-upstream-key",
        "ELEVENLABS_BASE_URL": emulator_url, "ELEVENLABS_VOICES": VOICE, "DEFAULT_VOICE": VOICE,
        "POOL_MIN_SOCKETS": "2", "POOL_MAX_SOCKETS": "600", "UPSTREAM_CONCURRENCY": "5000",
        "UPSTREAM_SLOT_WAIT_S": "10", "WORKER_MAX_JOBS": "3000", "LOG_FORMAT": "json",
        "LOG_LEVEL": "warning", "JOB_START_TIMEOUT_S": "20", "FIRST_AUDIO_TIMEOUT_S": "30",
        "INTER_CHUNK_TIMEOUT_S": "30", "SESSION_QUEUE_FRAMES": "2048",
    }
    env.update(extra or {})
    return env


def code_env(code_root: Path | None) -> dict[str, str]:
    """Environment that runs the services from another checkout (e.g. a git worktree of an older
    commit) for A/B comparisons; empty for this one."""
    if code_root is None:
        return {}
    return {"PYTHONPATH": f"{code_root / 'services'}:{code_root}"}


def start_stack(log_dir: Path, emulator_url: str, workers: int, extra_env: Mapping[str, str] | None = None,
                tag: str = "", code_root: Path | None = None, gateways: int = 1) -> Stack:
    """redis-server, ``workers`` workers and ``gateways`` gateways, each its own process; waits until
    every gateway is ready and sees every worker. One gateway is named ``gateway<tag>``, several
    ``gateway0<tag>``, ``gateway1<tag>``..."""
    redis = RedisServer().start()
    env = {**stack_env(redis.url, emulator_url, extra_env), **code_env(code_root)}
    ws: list[Proc] = []
    for i in range(workers):
        wenv = {**env, "WORKER_METRICS_PORT": str(free_port()), "WORKER_ID": f"bench-w{i}"}
        ws.append(spawn(f"worker{i}{tag}", [PY, "-m", "worker"], log_dir, wenv, cwd=code_root))
    gws: list[Proc] = []
    bases: list[str] = []
    for i in range(gateways):
        port = free_port()
        name = f"gateway{tag}" if gateways == 1 else f"gateway{i}{tag}"
        gws.append(spawn(name, [PY, "-m", "gateway"], log_dir, {**env, "GATEWAY_PORT": str(port)}, cwd=code_root))
        bases.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 90
    waiting = list(zip(gws, bases))
    while waiting:
        for p in (*gws, *ws):
            if not p.alive():
                redis.stop()
                raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
        gw, base = waiting[0]
        status, body = http_get(f"{base}/readyz")
        if status == 200 and _workers_live(body) >= workers:
            waiting.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"stack not ready: {gw.name} /readyz {status} {body[:200]!r}\n{gw.tail()}")
        time.sleep(0.1)
    return Stack(redis, gws, ws, bases)


def redis_commands(url: str) -> dict[str, int]:
    """Calls per command a redis-server has processed since it started (INFO commandstats), {} if unreachable."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]  # sync client
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return {}
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}


def _workers_live(body: bytes) -> int:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return 0
    w = data.get("workers")
    if isinstance(w, int):
        return w
    if isinstance(w, list):
        return len(w)
    return 1


class Sampler:
    """Samples CPU% and RSS of named processes every ``period`` seconds in a thread."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self._procs: dict[str, psutil.Process] = {}
        self.samples: list[tuple[float, dict[str, tuple[float, int, float, float]], float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        """Sample ``pid`` under ``name`` from now on."""
        try:
            p = psutil.Process(pid)
            p.cpu_percent(None)
        except psutil.Error:
            return
        with self._lock:
            self._procs[name] = p

    def pid(self, name: str) -> int | None:
        """The pid watched under ``name``, if any."""
        with self._lock:
            p = self._procs.get(name)
        return None if p is None else p.pid

    def unwatch(self, name: str) -> None:
        """Stop sampling ``name``."""
        with self._lock:
            self._procs.pop(name, None)

    def start(self) -> Sampler:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            now = time.monotonic()
            row: dict[str, tuple[float, int, float, float]] = {}
            with self._lock:
                items = list(self._procs.items())
            for name, p in items:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        row[name] = (p.cpu_percent(None), p.memory_info().rss, t.user + t.system, t.system)
                except psutil.Error:
                    continue
            st = psutil.cpu_times()
            busy = st.user + st.nice + st.system + st.irq + st.softirq + getattr(st, "steal", 0.0)
            self.samples.append((now, row, busy, os.getloadavg()[0]))

    def window(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """Per process between two ``time.monotonic()`` marks: mean and peak CPU% (100 = one core),
        CPU seconds used, peak RSS (MB); under ``"box"`` the cores the whole machine kept busy and
        the share of them other tenants' processes used (the machine is shared: read it as noise)."""
        rows = [s for s in self.samples if t0 <= s[0] <= t1]
        acc: dict[str, list[tuple[float, int, float, float]]] = {}
        for _, row, _, _ in rows:
            for name, v in row.items():
                acc.setdefault(name, []).append(v)
        out: dict[str, dict[str, float]] = {}
        for name, vals in acc.items():
            cpus = [c for c, _, _, _ in vals]
            out[name] = {"cpu_mean": round(sum(cpus) / len(cpus), 1), "cpu_max": round(max(cpus), 1),
                         "cpu_s": round(vals[-1][2] - vals[0][2], 2),
                         # the kernel's share (socket I/O): what no amount of Python tuning removes
                         "cpu_sys_s": round(vals[-1][3] - vals[0][3], 2),
                         "rss_max_mb": round(max(r for _, r, _, _ in vals) / 2**20, 1)}
        if len(rows) >= 2:
            span = rows[-1][0] - rows[0][0]
            box = (rows[-1][2] - rows[0][2]) / span if span > 0 else 0.0
            ours = sum(v["cpu_s"] for v in out.values()) / span if span > 0 else 0.0
            out["box"] = {"cores_busy": round(box, 2), "others_cores": round(max(0.0, box - ours), 2),
                          "load_avg_max": round(max(r[3] for r in rows), 2), "seconds": round(span, 1),
                          **_saturation(rows)}
        return out


# A sample interval with the whole machine at least this busy (share of all its cores) counts as saturated.
SATURATED_SHARE = 0.95


def _saturation(rows: list[tuple[float, dict[str, Any], float, float]]) -> dict[str, float]:
    """How busy the whole machine was sample by sample: p90 and peak cores, and the share of the
    phase it had no core to spare. A level whose mean leaves headroom can still saturate the box in
    its bursts (every session starting at once), and every process's audio is late while it does."""
    ncpu = psutil.cpu_count() or 1
    cores = sorted((b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(rows) if b[0] > a[0])
    if not cores:
        return {}
    return {"cores_p90": round(cores[min(len(cores) - 1, int(0.9 * len(cores)))], 2),
            "cores_max": round(cores[-1], 2),
            "saturated_pct": round(100 * sum(c >= SATURATED_SHARE * ncpu for c in cores) / len(cores), 1)}


def machine_facts() -> dict[str, Any]:
    """CPU count and model, memory, Python, redis-server and key library versions."""
    import platform
    from importlib import metadata

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from shared.redis_server import find_redis_binary

        rv = subprocess.run([find_redis_binary(), "--version"], capture_output=True, text=True, timeout=5,
                            check=False).stdout
        redis_version = next((w.split("=", 1)[1] for w in rv.split() if w.startswith("v=")), rv.strip())
    except Exception:  # noqa: BLE001 - a fact we could not read is reported as unknown
        redis_version = "unknown"
    libs: dict[str, str | None] = {}
    for lib in ("aiohttp", "redis", "hiredis", "arq", "msgpack", "uvloop", "psutil"):
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = None
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(), "redis_server": redis_version,
            "libraries": libs, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
