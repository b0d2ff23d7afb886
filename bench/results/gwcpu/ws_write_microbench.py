"""Server CPU per 24 KB WebSocket frame, aiohttp default vs one write per frame (server in a child process).

``.venv/bin/python bench/results/gwcpu/ws_write_microbench.py default|whole``: 50 clients, 400 frames each,
2 ms apart, on loopback; the server runs uvloop like the gateway. Prints the server's CPU per frame.
"""
import asyncio, os, sys, time
from pathlib import Path
import uvloop
from aiohttp import web, ClientSession, WSMsgType

N_CLIENTS, FRAMES, SIZE = 50, 400, 24000

def serve(port, whole):
    if whole:
        sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
        from shared.ws_frames import write_frames_whole
        assert write_frames_whole()
    payload = os.urandom(SIZE)
    async def h(request):
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.receive()
        t0 = time.process_time()
        for i in range(FRAMES):
            await ws.send_bytes(payload)
            await asyncio.sleep(0.002)
        await ws.close()
        return ws
    app = web.Application(); app.router.add_get("/", h)
    web.run_app(app, port=port, print=None, loop=uvloop.new_event_loop(), access_log=None)

async def clients(port):
    async with ClientSession() as s:
        async def one():
            async with s.ws_connect(f"http://127.0.0.1:{port}/") as ws:
                await ws.send_str("go")
                n = 0
                async for m in ws:
                    if m.type == WSMsgType.BINARY: n += 1
                return n
        return sum(await asyncio.gather(*(one() for _ in range(N_CLIENTS))))

if __name__ == "__main__":
    import multiprocessing, psutil
    whole = sys.argv[1] == "whole"
    port = 18000 + os.getpid() % 1000
    p = multiprocessing.Process(target=serve, args=(port, whole)); p.start()
    time.sleep(1.0)
    proc = psutil.Process(p.pid); c0 = proc.cpu_times()
    n = uvloop.run(clients(port))
    c1 = proc.cpu_times(); p.terminate(); p.join()
    u, s_ = c1.user - c0.user, c1.system - c0.system
    print(f"{sys.argv[1]}: frames {n}, server µs/frame user {u/n*1e6:.1f} sys {s_/n*1e6:.1f} total {(u+s_)/n*1e6:.1f}")
