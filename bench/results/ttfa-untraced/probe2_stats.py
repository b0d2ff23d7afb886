import json, sys, glob
d = sys.argv[1]
def pct(v, q):
    v = sorted(v); return v[min(len(v)-1, int(round(q/100*(len(v)-1))))] if v else float('nan')
for glog in sorted(glob.glob(d + "/gateway*.log")):
    seen, wall, cpu = set(), [], []
    for l in open(glog, errors="replace"):
        if '"gw_probe"' not in l: continue
        r = json.loads(l)
        if r["probe_session"] not in seen:
            seen.add(r["probe_session"]); continue  # the session's warm-up context
        wall.append(r["wall_ms"]); cpu.append(r["cpu_ms"])
    print(glog, f"rx->context created (measured contexts only) n={len(wall)}")
    for name, v in (("wall", wall), ("cpu", cpu)):
        print(f"  {name}: p50 {pct(v,50):.3f} p75 {pct(v,75):.3f} p90 {pct(v,90):.3f} p99 {pct(v,99):.3f} ms")
for wlog in sorted(glob.glob(d + "/worker0*.log")):
    seen, rows = set(), []
    for l in open(wlog, errors="replace"):
        if '"wk_probe"' not in l: continue
        r = json.loads(l)
        sid = r.get("session_id")
        if sid is not None and sid not in seen:
            seen.add(sid); continue
        rows.append(r)
    print(wlog, f"n={len(rows)} (warm-ups dropped: {len(seen)})")
    for k in ("open_to_feeder_wall", "open_to_feeder_cpu", "feeder_send_wall", "feeder_send_cpu"):
        v = [r[k] for r in rows]
        print(f"  {k:<22} p50 {pct(v,50):.3f} p75 {pct(v,75):.3f} p90 {pct(v,90):.3f} p99 {pct(v,99):.3f} ms")
