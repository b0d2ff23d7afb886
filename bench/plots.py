"""PNG plots of a run: TTFA percentiles vs concurrency, added latency vs the floor, underruns and CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_STYLE = {"floor": "k", "proxy": "tab:red", "stack-1w": "tab:blue", "stack-2w": "tab:green",
          "stack-2g": "tab:olive", "compat-1w": "tab:purple", "cache-1w": "tab:orange"}
# Process colours by role; the harness (emulator, load generators) in greys.
_ROLE_COLOUR = {"gateway": "tab:blue", "worker": "tab:green", "redis": "tab:red", "proxy": "tab:purple",
                "emulator": "0.45", "loadgen": "0.75"}


def _series(rows: list[dict[str, Any]], target: str, key: str) -> tuple[list[int], list[float]]:
    pts = sorted((r["level"], float(r[key])) for r in rows if r["target"] == target and r.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def ttfa_vs_concurrency(rows: list[dict[str, Any]], path: Path) -> None:
    """TTFA p50 (solid), p90 (dashed), p99 (dotted) per target."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in _targets(rows):
        for key, ls in (("ttfa_p50", "-"), ("ttfa_p90", "--"), ("ttfa_p99", ":")):
            x, y = _series(rows, t, key)
            if x:
                ax.plot(x, y, ls, marker="o", ms=3, color=_STYLE.get(t), label=f"{t} {key[5:]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("time to first audio (ms)")
    ax.set_title("TTFA vs concurrency (emulator ttfb 150 ms, connect 300 ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def added_vs_floor(rows: list[dict[str, Any]], path: Path) -> None:
    """TTFA added over the floor (p50 solid, p99 dotted) per target, symlog scale."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in _targets(rows):
        if t == "floor" or t.startswith("cache"):
            continue  # a cache hit skips the upstream: it is compared in absolute terms instead
        for key, ls in (("added_whole_p50", "-"), ("added_whole_p99", ":")):
            x, y = _series(rows, t, key)
            if x:
                ax.plot(x, y, ls, marker="o", ms=3, color=_STYLE.get(t), label=f"{t} {key[-3:]}")
    ax.axhline(2, color="grey", lw=0.8, ls="--")
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("added TTFA over the floor, whole utterances (ms)")
    ax.set_title("Cost of the path over a warm direct socket (targets: p50 2 ms, p99 10 ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def capacity_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Underrun share and per-process CPU against concurrency."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for t in _targets(rows):
        x, y = _series(rows, t, "underrun_pct")
        if x:
            a1.plot(x, y, marker="o", ms=3, color=_STYLE.get(t), label=t)
    a1.set_xscale("log")
    a1.set_xlabel("concurrent streams")
    a1.set_ylabel("contexts with an underrun (%)")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=7)
    for t in ("stack-1w",):
        levels = sorted({r["level"] for r in rows if r["target"] == t})
        procs = sorted({p for r in rows if r["target"] == t for p in r.get("resources", {})
                        if not p.endswith("-2w") and "proxy" not in p})
        for p in procs:
            ys = []
            for lv in levels:
                r = next(r for r in rows if r["target"] == t and r["level"] == lv)
                ys.append(r.get("resources", {}).get(p, {}).get("cpu_mean"))
            pts = [(x, y) for x, y in zip(levels, ys) if y is not None]
            if pts:
                a2.plot([p_[0] for p_ in pts], [p_[1] for p_ in pts], marker="o", ms=3, label=p)
    a2.set_xscale("log")
    a2.set_xlabel("concurrent streams (stack-1w)")
    a2.set_ylabel("CPU % (100 = one core)")
    a2.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _role(process: str) -> str:
    return next((r for r in _ROLE_COLOUR if process.startswith(r)), "")


def _short(process: str, target: str) -> str:
    """``worker0-2w`` -> ``worker0``: the target's tag is in the group label already."""
    tag = target[target.find("-"):] if "-" in target else ""
    return process.removesuffix(tag) if tag else process


def cost_per_process(rows: list[dict[str, Any]], path: Path) -> None:
    """ms of CPU per audio-second of every process, one group of bars per target (and level)."""
    groups = [r for r in rows if r.get("audio_s") and r.get("resources")]
    levels = {r["level"] for r in groups}
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 + 0.45 * sum(len(r["resources"]) + 1 for r in groups)), 5))
    x = 0.0
    ticks: list[tuple[float, str]] = []
    seen: set[str] = set()
    for r in groups:
        start = x
        for name in sorted(r["resources"], key=lambda n: (list(_ROLE_COLOUR).index(_role(n)) if _role(n) else 99, n)):
            v = r["resources"][name].get("cpu_ms_per_audio_s")
            if v is None:
                continue
            role = _role(name)
            ax.bar(x, v, width=0.8, color=_ROLE_COLOUR.get(role, "0.6"),
                   label=role if role not in seen else None)
            seen.add(role)
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6)
            ax.text(x, 0, _short(name, r["target"]), ha="center", va="top", rotation=90, fontsize=6)
            x += 1
        label = r["target"] if len(levels) == 1 else f"{r['target']} @ {r['level']}"
        ticks.append(((start + x - 1) / 2, label))
        x += 1
    ax.set_xticks([t for t, _ in ticks], [lbl for _, lbl in ticks])
    ax.tick_params(axis="x", pad=42, length=0)
    # The denominator is all the audio the target delivered: N processes sharing a role evenly cost
    # 1/N of one alone each when the per-process cost is flat.
    ax.set_ylabel("ms CPU per second of the target's audio")
    title = "CPU per audio-second, per process"
    if len(levels) == 1:
        title += f" ({next(iter(levels))} streams)"
    ax.set_title(title + "; flat: N sharing a role each cost 1/N of one alone", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """Write every plot; returns the file names."""
    names = ["ttfa_vs_concurrency.png", "added_vs_floor.png", "capacity.png", "cost_per_process.png"]
    ttfa_vs_concurrency(rows, out_dir / names[0])
    added_vs_floor(rows, out_dir / names[1])
    capacity_plot(rows, out_dir / names[2])
    cost_per_process(rows, out_dir / names[3])
    return names
