"""Sampling profiles of the benchmark's processes with py-spy, and a plain-text summary of each.

``python -m bench.run --profile`` attaches ``py-spy record`` (non-blocking, so the process under test
is never paused) to every process serving a target and to the load generators while a level runs,
then writes ``profiles/<target>-<level>-<process>.txt``: the functions holding the most samples,
by own time and including callees. The CPU figures themselves come from the psutil sampler; a
profile says where that CPU goes. ``python -m bench.profile RAW.txt`` summarises a collapsed-stack
file recorded by hand (``py-spy record --format raw``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLE_RATE_HZ = 97  # prime: does not beat against 10 ms / 50 ms timers in the code under test
TOP = 30


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, else on PATH, else None."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy recorders attached to running processes, stopped together."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.exe = py_spy()
        self._running: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, pid: int) -> None:
        """Record ``pid`` until :meth:`stop` (no-op without py-spy)."""
        if self.exe is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = self.out_dir / f"{name}.raw"
        p = subprocess.Popen([self.exe, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ),
                              "--format", "raw", "--function", "--nonblocking", "--output", str(raw)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._running.append((name, p, raw))

    def stop(self) -> list[Path]:
        """Stop every recorder (SIGINT makes py-spy write its file); returns the summaries written."""
        written = []
        for _, p, _ in self._running:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for name, p, raw in self._running:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if raw.exists():
                txt = raw.with_suffix(".txt")
                txt.write_text(summarize(raw.read_text(errors="replace"), title=name))
                raw.unlink()
                written.append(txt)
        self._running.clear()
        return written


def summarize(collapsed: str, title: str = "", top: int = TOP) -> str:
    """Top functions by own samples and by inclusive samples from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"# {title}: {total} samples at {SAMPLE_RATE_HZ} Hz while the level ran",
             "", "py-spy samples busy threads only. A load generator's profile covers its whole life (connect,",
             "warm-up, the content checks after the run), the CPU figures only the measured phase. With uvloop",
             "its C loop (socket reads, timers, callbacks) shows as `Runner.run`'s own samples.",
             "", f"## top {top} by own samples", ""]
    lines += [f"{100 * n / max(total, 1):5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", f"## top {top} including callees", ""]
    lines += [f"{100 * n / max(total, 1):5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # "func (/long/path/to/pkg/mod.py:123)" -> "func (pkg/mod.py:123)": enough to find it, short enough to read.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, lineno = where.rpartition(":")
    parts = Path(path).parts[-2:] if path else ()
    return f"{name} ({'/'.join(parts)}:{lineno})" if parts else name


if __name__ == "__main__":
    src = Path(sys.argv[1])
    print(summarize(src.read_text(errors="replace"), title=src.name))
