import asyncio, sys, time, cProfile, pstats, json
sys.path[:0] = ["/work/wt-ttfa/services", "/work/wt-ttfa"]
from gateway.native import messages as m
from gateway.requests import build_request
from gateway.contexts import ContextState
from gateway.catalog import Catalog, Snapshot, WorkerInfo
from shared.audio.clock import PlayClock

class FakeCatalog(Catalog):
    def __init__(self):
        self._default_voice = "21m00Tcm4TlvDq8ikWAM"
        self._snap = Snapshot(workers=[object()], voices={"21m00Tcm4TlvDq8ikWAM": {"voice_id": "21m00Tcm4TlvDq8ikWAM", "provider": "elevenlabs"}}, at=time.monotonic() + 1e9)
        self._refreshing = None
cat = FakeCatalog()
data = json.dumps({"type": "start", "context_id": "s0-2", "format": "pcm_24000", "text": "Thanks for calling, how can I help you with your order today?", "end": True, "cache": False}).encode()

async def one():
    cmd = m.parse(data)
    req = await build_request(cat, context_id=cmd.context_id, voice=cmd.voice, model=cmd.model, fmt=cmd.format,
                              voice_settings=cmd.voice_settings, options=cmd.options, text=cmd.text,
                              input_closed=cmd.end, use_cache=cmd.cache, trace_parent=cmd.trace_parent or {})
    PlayClock(req.fmt)
    ctx = ContextState(request=req, session_id="s", tenant="")
    return ctx

async def main():
    for _ in range(200): await one()
    parts = {}
    N = 3000
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(N): await one()
        best = min(best, (time.perf_counter() - t) / N)
    print(f"parse+build_request+ContextState: {best*1e6:.1f} us")
    cmd = m.parse(data)
    for name, fn in (("parse", lambda: m.parse(data)),):
        t = time.perf_counter()
        for _ in range(N): fn()
        print(name, f"{(time.perf_counter()-t)/N*1e6:.1f} us")
    pr = cProfile.Profile(); pr.enable()
    for _ in range(N): await one()
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
asyncio.run(main())
