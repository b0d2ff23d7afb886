import json, sys, glob
d = sys.argv[1]
def pct(v, q):
    v = sorted(v); return v[min(len(v)-1, int(round(q/100*(len(v)-1))))] if v else float('nan')
for wlog in sorted(glob.glob(d + "/worker0*.log")):
    seen: set[str | None] = set()
    legs: dict[str, list[float]] = {}
    for line in open(wlog, errors="replace"):
        if '"ttfa_probe"' not in line: continue
        r = json.loads(line)
        if r.get("session_id") not in seen:
            seen.add(r.get("session_id")); continue
        if not all(k in r for k in ("wire_sent", "wire_recv", "routed", "text_sent", "first_audio")): continue
        for name, a, b in (("text_sent->wire_sent", "text_sent", "wire_sent"), ("wire_sent->wire_recv", "wire_sent", "wire_recv"),
                           ("wire_recv->routed", "wire_recv", "routed"), ("routed->first_audio", "routed", "first_audio"),
                           ("U (text_sent->first_audio)", "text_sent", "first_audio")):
            legs.setdefault(name, []).append((r[b] - r[a]) * 1000)
    print(wlog, "measured contexts:", len(legs.get("U (text_sent->first_audio)", [])))
    for k, v in legs.items():
        print(f"  {k:<28} p50 {pct(v,50):8.3f} p90 {pct(v,90):8.3f} p99 {pct(v,99):8.3f} ms")
