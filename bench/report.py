"""Aggregate per-context records into per-(target, level) rows; write JSON and a markdown report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import SATURATED_SHARE


def pct(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank on a sorted copy), None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def summarize(records: list[dict[str, Any]], jitter_ms: float) -> dict[str, Any]:
    """TTFA percentiles (all / whole / streamed), gaps, underruns, completion, errors, continuity."""
    ok = [r for r in records if r["ok"]]
    ttfa = [r["ttfa_ms"] for r in records if r["ttfa_ms"] is not None]
    by_mode = {m: [r["ttfa_ms"] for r in records if r["mode"] == m and r["ttfa_ms"] is not None]
               for m in ("whole", "stream", "cache")}
    gaps = [g for r in records for g in r["gaps_ms"]]
    late = [r["max_late_ms"] for r in records if r["max_late_ms"] is not None]
    under = [r for r in records if r["underruns"] > 0]
    errors = Counter(str(r["error"]) for r in records if not r["ok"])
    out: dict[str, Any] = {
        "contexts": len(records), "completed": len(ok),
        "completion_pct": _r(100 * len(ok) / len(records), 2) if records else None,
        "errors": dict(errors.most_common(6)),
        "seq_violations": sum(1 for r in records if not r["seq_ok"]),
        "ttfa_p50": _r(pct(ttfa, 50), 2), "ttfa_p90": _r(pct(ttfa, 90), 2), "ttfa_p99": _r(pct(ttfa, 99), 2),
        "ttfa_max": _r(max(ttfa) if ttfa else None, 2),
        "underrun_contexts": len(under), "underrun_pct": _r(100 * len(under) / len(records), 2) if records else None,
        "underrun_chunks": sum(r["underruns"] for r in records), "jitter_ms": jitter_ms,
        "late_p99_ms": _r(pct(late, 99)), "late_max_ms": _r(max(late) if late else None),
        "gap_p50_ms": _r(pct(gaps, 50)), "gap_p99_ms": _r(pct(gaps, 99)), "gap_max_ms": _r(max(gaps) if gaps else None),
        "audio_s": _r(sum(r["audio_s"] for r in records)),
    }
    for mode, vals in by_mode.items():
        if vals:
            out[f"ttfa_{mode}"] = {"n": len(vals), "p50": _r(pct(vals, 50), 2), "p90": _r(pct(vals, 90), 2),
                                   "p99": _r(pct(vals, 99), 2)}
    checked = [r for r in records if r.get("content_ok") is not None]
    out["content_checked"] = len(checked)
    out["content_bad"] = sum(1 for r in checked if not r["content_ok"])
    cached = [r for r in records if r.get("cached") is not None]
    if cached:
        out["cache_hits"] = sum(1 for r in cached if r["cached"])
    return out


def added_over_floor(row: dict[str, Any], floor: dict[str, Any] | None) -> dict[str, Any]:
    """Percentile differences against the floor at the same level, per mode where both have it."""
    if not floor:
        return {}
    out: dict[str, Any] = {}
    for p in ("p50", "p90", "p99"):
        a, b = row.get(f"ttfa_{p}"), floor.get(f"ttfa_{p}")
        out[f"added_{p}"] = None if a is None or b is None else round(a - b, 2)
    fw = floor.get("ttfa_whole")
    rw = row.get("ttfa_whole") or row.get("ttfa_cache")
    if fw and rw:
        for p in ("p50", "p90", "p99"):
            out[f"added_whole_{p}"] = round(rw[p] - fw[p], 2)
    return out


def capacity(rows: list[dict[str, Any]]) -> dict[str, int | None]:
    """Per target: the highest level with no underrun, no error and no sequence violation."""
    out: dict[str, int | None] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        good = None
        for r in sorted((r for r in rows if r["target"] == target), key=lambda r: r["level"]):
            clean = (r["underrun_contexts"] == 0 and r["completed"] == r["contexts"] and r["contexts"] > 0
                     and r["seq_violations"] == 0)
            if clean:
                good = r["level"]
            else:
                break
        out[target] = good
    return out


STACK_ROLES = ("gateway", "worker", "redis")


def stack_cost(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stack's processes' ms CPU per audio-second, per role (each gateway and worker separately,
    in name order) and in total; the harness (emulator, load generators) is left out."""
    out: dict[str, Any] = {role: [] for role in STACK_ROLES}
    for name in sorted(resources):
        v = resources[name].get("cpu_ms_per_audio_s")
        role = next((r for r in STACK_ROLES if name.startswith(r)), None)
        if role is not None and v is not None:
            out[role].append(v)
    out["total"] = round(sum(sum(out[r]) for r in STACK_ROLES), 2)
    return out


def _cost_cell(values: list[float]) -> str:
    if not values:
        return "—"
    return " + ".join(f"{v:.2f}" for v in values) + (f" = {sum(values):.2f}" if len(values) > 1 else "")


def markdown(result: dict[str, Any]) -> str:
    """The human-readable report."""
    facts = result["machine"]
    lines = [f"# Benchmark {result['started_at']} ({result['mode']})", "",
             (f"Machine: {facts['cpu_count']} × {facts['cpu_model']}, {facts['memory_gb']} GB, Python "
             f"{facts['python']}, redis-server {facts['redis_server']}, load average at start "
             f"{facts['load_avg_at_start']}."), "",
             (f"Emulator (own process): {result['emulator']}. Underrun: a chunk arriving more than "
             f"{result['jitter_ms']} ms after the audio before it finished playing (playback starts at the "
             f"first chunk). TTFA: from the send of the message that makes audio due (a whole utterance's "
             f"`start`, a streamed turn's first `flush`) to its first audio byte. Streamed share "
             f"{result['stream_share']:.0%} at 20–50 tokens/s."), "",
             "## Time to first audio and real-time delivery", "",
             ("'streams' is the number of client sessions; 'playing' is the mean number of streams actually "
             "delivering audio over the measured phase (audio seconds delivered / phase length)."), "",
             ("| target | streams | playing | contexts | done % | TTFA p50 | p90 | p99 | +floor p50 | +p90 | +p99 "
             "| underrun ctx | late p99 ms | gap p99 ms | errors | seq bad | content bad/checked |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in result["rows"]:
        errs = ", ".join(f"{k}×{v}" for k, v in r["errors"].items()) or "—"
        lines.append(
            f"| {r['target']} | {r['level']} | {_playing(r)} | {r['contexts']} | {r['completion_pct']} | {r['ttfa_p50']} | "
            f"{r['ttfa_p90']} | {r['ttfa_p99']} | {_fmt(r.get('added_p50'))} | {_fmt(r.get('added_p90'))} | "
            f"{_fmt(r.get('added_p99'))} | {r['underrun_contexts']} | {r['late_p99_ms']} | {r['gap_p99_ms']} | "
            f"{errs} | {r['seq_violations']} | {r.get('content_bad', '—')}/{r.get('content_checked', '—')} |")
    lines += ["", "Whole utterances only (TTFA ms, p50 / p99):", "",
              "| target | streams | whole p50 | whole p99 | +floor whole p50 | +floor whole p99 |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        w = r.get("ttfa_whole") or r.get("ttfa_cache")
        if w:
            lines.append(f"| {r['target']} | {r['level']} | {w['p50']} | {w['p99']} | "
                         f"{_fmt(r.get('added_whole_p50'))} | {_fmt(r.get('added_whole_p99'))} |")
    lines += ["", "## Capacity (highest level with no underrun, error or gap in sequence)", ""]
    for t, lvl in result["capacity"].items():
        lines.append(f"- {t}: {lvl if lvl is not None else 'below the lowest level'}")
    lines += ["", "## CPU and memory per process during the measured phase", "",
              ("CPU % is the mean over the phase (100 = one core); ms/s is CPU milliseconds spent per second "
              "of audio delivered (lower is better; capacity ≈ 1000 × cores / sum of ms/s; streams/core = 1000 / ms/s, what "
              "one core would carry of that process alone; kernel = the share spent in system calls); 'others' is what "
              "other tenants of this shared machine kept busy meanwhile, in cores."), "",
              "| target | streams | others (cores) | process: cpu % mean/max, ms/s, peak RSS |", "|---|---:|---:|---|"]
    for r in result["rows"]:
        parts = [f"{n}: {v['cpu_mean']}/{v['cpu_max']}%, {v.get('cpu_ms_per_audio_s')} ms/s "
                 f"(≈{v.get('streams_per_core', '—')} streams/core{_sys(v)}), {v['rss_max_mb']} MB"
                 for n, v in sorted(r.get("resources", {}).items())]
        lines.append(f"| {r['target']} | {r['level']} | {r.get('box', {}).get('others_cores', '—')} | "
                     f"{'; '.join(parts)} |")
    sat_rows = [r for r in result["rows"] if "saturated_pct" in r.get("box", {})]
    if sat_rows:
        lines += ["", "## The whole machine during the measured phase", "",
                  (f"Cores busy on the whole machine (harness, stack and anyone else), sampled every 0.5 s: mean, "
                   f"p90 and peak, and the share of samples with at least {int(SATURATED_SHARE * 100)} % of all "
                   "cores busy. While the machine is saturated every process waits for a core, and audio "
                   "arrives late whichever process is slowest."), "",
                  "| target | streams | cores mean | p90 | peak | saturated % | underrun ctx |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in sat_rows:
            b = r["box"]
            lines.append(f"| {r['target']} | {r['level']} | {b['cores_busy']} | {b['cores_p90']} | {b['cores_max']} "
                         f"| {b['saturated_pct']} | {r.get('underrun_contexts', '—')} |")
    stack_rows = [(r, stack_cost(r.get("resources", {}))) for r in result["rows"]]
    stack_rows = [(r, c) for r, c in stack_rows if c["total"]]
    if stack_rows:
        lines += ["", "## Stack CPU per audio-second, per process", "",
                  ("ms of CPU per second of all the audio the target delivered, each gateway and worker "
                   "process separately, then their sum. Per-process cost is flat as processes are added when "
                   "a role's sum stays what one process alone costs (N processes sharing it evenly cost 1/N "
                   "each)."), "",
                  "| target | streams | gateway(s) | worker(s) | Redis | stack total | done % |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r, c in stack_rows:
            lines.append(f"| {r['target']} | {r['level']} | {_cost_cell(c['gateway'])} | {_cost_cell(c['worker'])} "
                         f"| {_cost_cell(c['redis'])} | {c['total']:.2f} | {r['completion_pct']} |")
    redis_rows = [r for r in result["rows"] if r.get("redis_commands")]
    if redis_rows:
        lines += ["", "## Redis commands (whole level, connect and warm-up included)", "",
                  "| target | streams | commands | per context | per audio-second | top commands |",
                  "|---|---:|---:|---:|---:|---|"]
        for r in redis_rows:
            c = r["redis_commands"]
            top = ", ".join(f"{k} {v}" for k, v in list(c.get("by_command", {}).items())[:8])
            lines.append(f"| {r['target']} | {r['level']} | {c['total']} | {c['per_context']} | {c['per_audio_s']} "
                         f"| {top} |")
    if result.get("idle_memory"):
        m = result["idle_memory"]
        lines += ["", "## Gateway memory per idle session", "",
                  (f"{m['sessions']} idle native sessions: gateway RSS {m['rss_before_mb']} → {m['rss_open_mb']} MB "
                  f"(**{m['kb_per_session']} KB per session**), {m['rss_after_close_mb']} MB after they closed.")]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _sys(v: dict[str, Any]) -> str:
    if not v.get("cpu_s") or v.get("cpu_sys_s") is None:
        return ""
    return f", kernel {100 * v['cpu_sys_s'] / v['cpu_s']:.0f}%"


def _playing(r: dict[str, Any]) -> str:
    secs = (r.get("phase_s") or {}).get("measured_s")
    return f"{r['audio_s'] / secs:.0f}" if secs and r.get("audio_s") is not None else "—"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f}"


def write(result: dict[str, Any], out_dir: Path) -> None:
    """results.json and report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    (out_dir / "report.md").write_text(markdown(result))
