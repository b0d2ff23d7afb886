"""RTT of one WS text message client->server->client on loopback (uvloop both ends), idle gaps between."""
import asyncio, sys, time, statistics, subprocess, os
import aiohttp, uvloop
from aiohttp import web

def serve(port, spin_us):
    async def h(req):
        ws = web.WebSocketResponse(); await ws.prepare(req)
        loop = asyncio.get_running_loop()
        async for m in ws:
            await ws.send_str(m.data)
            if spin_us:
                end = time.perf_counter() + spin_us / 1e6
                while time.perf_counter() < end:
                    await asyncio.sleep(0)
        return ws
    app = web.Application(); app.router.add_get("/", h)
    web.run_app(app, port=port, print=None, loop=uvloop.new_event_loop(), access_log=None)

async def client(port, n, gap_ms):
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            try:
                ws = await s.ws_connect(f"http://127.0.0.1:{port}/"); break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        rtts = []
        for i in range(n):
            t0 = time.perf_counter(); await ws.send_str('{"text":"hello there", "context_id":"x"}')
            await ws.receive(); rtts.append((time.perf_counter() - t0) * 1e6)
            await asyncio.sleep(gap_ms / 1000)
        rtts.sort()
        print(f"gap {gap_ms}ms: RTT p50 {rtts[n//2]:.0f}us p90 {rtts[int(n*.9)]:.0f} p99 {rtts[int(n*.99)]:.0f}")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        for spin in (0, 500):
            port = 20000 + spin
            p = subprocess.Popen([sys.executable, __file__, "serve", str(port), str(spin)])
            try:
                print(f"server spin after reply {spin}us:")
                for gap in (0, 5):
                    uvloop.run(client(port, 300, gap))
            finally:
                p.terminate(); p.wait()
