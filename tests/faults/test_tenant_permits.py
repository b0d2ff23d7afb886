"""Tenant isolation on real processes (issue 12, items 1 and 2): gateway, worker and the emulator as
ElevenLabs, each its own process, auth on, two tenants' keys.

- Idle contexts hold no upstream permit: tenant A's ten never-texted contexts do not make tenant B
  wait, and they end with ``input_timeout``.
- Under contention the account's permits are split by fair share, not by who queued first.
- No client string becomes a metric label: hundreds of unique ``model`` values leave both
  processes' ``/metrics`` the same size.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import KNOWN_MODELS, OTHER
from tests.faults.support import ADMIN_TOKEN, VOICE, Stack, report, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

TEXT_WAIT_S = 4.0


async def tenant_stack(procs: Procs, redis_url: str, **env: Any) -> Stack:
    """Auth on, two permits on the whole account, a short wait for text."""
    base: dict[str, Any] = {"AUTH_DISABLED": False, "UPSTREAM_CONCURRENCY": 2, "UPSTREAM_TEXT_WAIT_S": TEXT_WAIT_S,
                            "UPSTREAM_SLOT_WAIT_S": 5.0}
    return await start_stack(procs, redis_url, **{**base, **env})


async def new_key_for(http: aiohttp.ClientSession, base: str, name: str) -> str:
    """A client key (one tenant) from the admin API."""
    async with http.post(base + "/admin/keys", json={"name": name},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["key"])


@contextlib.asynccontextmanager
async def native(stack: Stack, http: aiohttp.ClientSession, key: str) -> AsyncIterator[NativeClient]:
    """A native session authenticated with ``key``."""
    async with NativeClient.connect(stack.base, http, headers={"xi-api-key": key}) as client:
        yield client


async def el_stream(http: aiohttp.ClientSession, stack: Stack, key: str, text: str) -> tuple[int, bytes, float]:
    """(status, body, seconds) of ElevenLabs' ``/stream`` for ``text``."""
    t0 = time.monotonic()
    async with http.post(stack.base + f"/v1/text-to-speech/{VOICE}/stream?output_format=pcm_24000",
                         json={"text": text}, headers={"xi-api-key": key}) as resp:
        body = await resp.read()
        return resp.status, body, time.monotonic() - t0


async def test_idle_contexts_of_one_tenant_never_make_another_wait(procs: Procs, redis_url: str) -> None:
    stack = await tenant_stack(procs, redis_url)
    async with aiohttp.ClientSession() as http:
        key_a, key_b = await new_key_for(http, stack.base, "tenant-a"), await new_key_for(http, stack.base, "tenant-b")
        async with native(stack, http, key_a) as a:
            ids = [f"idle-{i}" for i in range(10)]
            for cid in ids:
                await a.send(type="start", context_id=cid, voice=VOICE)  # a voice, never any text
            await a.pump_until(lambda c: all(c.result(i).started for i in ids), 10)
            t_open = time.monotonic()
            # Tenant B, while A's ten contexts are open: served at once, not after a 5 s wait and a 503.
            results = [await el_stream(http, stack, key_b, f"Tenant B speaks, turn {n}.") for n in range(3)]
            assert time.monotonic() - t_open < TEXT_WAIT_S, "A's contexts must still be open during B's turns"
            assert not any(a.ended(i) for i in ids)
            for status, body, _ in results:
                assert status == 200 and len(body) > 1000, (status, body[:200])
            worst = max(s for _, _, s in results)
            # A never-texted context ends with its typed error after UPSTREAM_TEXT_WAIT_S.
            await a.pump_until(lambda c: all(c.ended(i) for i in ids), TEXT_WAIT_S + 10)
            waited = time.monotonic() - t_open
            codes = {a.result(i).error["code"] if a.result(i).error else None for i in ids}  # type: ignore[index]
            assert codes == {"input_timeout"}
            assert not a.session_errors  # the session itself stays open and usable
            after = await a.speak("after", "Tenant A speaks at last.", voice=VOICE, format="pcm_24000")
            assert after.final is not None and after.audio
    report("tenant_idle_contexts", idle_contexts=10, upstream_concurrency=2, b_worst_s=round(worst, 3),
           idle_ended_after_s=round(waited, 2))


async def test_contexts_that_went_quiet_give_the_account_back(procs: Procs, redis_url: str) -> None:
    # A's contexts each sent a word (no flush) and then nothing: they take permits, then idle.
    stack = await tenant_stack(procs, redis_url, UPSTREAM_IDLE_RELEASE_S=1.0, UPSTREAM_TEXT_WAIT_S=60.0)
    async with aiohttp.ClientSession() as http:
        key_a, key_b = await new_key_for(http, stack.base, "tenant-a"), await new_key_for(http, stack.base, "tenant-b")
        async with native(stack, http, key_a) as a:
            ids = [f"quiet-{i}" for i in range(2)]
            for cid in ids:
                await a.send(type="start", context_id=cid, voice=VOICE, text="Hello ")
            await a.pump_until(lambda c: all(c.result(i).started for i in ids), 10)
            await asyncio.sleep(0.3)  # both permits taken by A
            status, body, seconds = await el_stream(http, stack, key_b, "Tenant B speaks now.")
            assert status == 200 and len(body) > 1000, (status, body[:200])
            # Served once A's contexts idled (1 s): a permit not freed would be refused after UPSTREAM_SLOT_WAIT_S.
            assert seconds < 5.0 + LOAD_MARGIN_S
            # A's contexts are still open and still speak when they get text again.
            for cid in ids:
                await a.send(type="text", context_id=cid, text="again.", flush=True)
                await a.send(type="end", context_id=cid)
            await a.pump_until(lambda c: all(c.ended(i) for i in ids), 20)
            assert all(a.result(i).final is not None and a.result(i).audio for i in ids)
    report("tenant_quiet_contexts", upstream_concurrency=2, idle_release_s=1.0, b_s=round(seconds, 3))


async def test_fair_share_lets_a_second_tenant_past_a_busy_one(procs: Procs, redis_url: str) -> None:
    # Each context speaks ~1.5 s of audio in real time; A queues six, B one just after.
    stack = await tenant_stack(procs, redis_url, UPSTREAM_SLOT_WAIT_S=30.0,
                               emulator={"realtime_factor": 1.0, "chunk_ms": 120})
    text = "Twenty five letters here."
    async with aiohttp.ClientSession() as http:
        key_a, key_b = await new_key_for(http, stack.base, "tenant-a"), await new_key_for(http, stack.base, "tenant-b")
        async with native(stack, http, key_a) as a, native(stack, http, key_b) as b:
            first_audio: dict[str, float] = {}

            def note(client: NativeClient, name: str) -> None:
                for cid, r in client.results.items():
                    if r.frames and f"{name}:{cid}" not in first_audio:
                        first_audio[f"{name}:{cid}"] = time.monotonic()

            for i in range(6):
                await a.send(type="start", context_id=f"a{i}", voice=VOICE, text=text, end=True)
            await asyncio.sleep(0.5)  # A holds both permits, four of its contexts wait in line
            await b.send(type="start", context_id="b0", voice=VOICE, text=text, end=True)

            async def pump(client: NativeClient, name: str, ids: list[str]) -> None:
                async with asyncio.timeout(60):
                    while not all(client.ended(i) for i in ids):
                        client.handle(await client.ws.receive())
                        note(client, name)

            await asyncio.gather(pump(a, "a", [f"a{i}" for i in range(6)]), pump(b, "b", ["b0"]))
            assert all(a.result(f"a{i}").final for i in range(6)) and b.result("b0").final
    a_order = sorted(t for k, t in first_audio.items() if k.startswith("a:"))
    b_at = first_audio["b:b0"]
    # FIFO alone would serve B after all of A's four waiters; fair share gives it the first free permit.
    assert b_at < a_order[3], (b_at, a_order)
    report("tenant_fair_share", a_contexts=6, b_behind=sum(1 for t in a_order if t < b_at))


async def scrape(http: aiohttp.ClientSession, base: str) -> tuple[int, int, set[str]]:
    """(bytes, series, model label values) of a /metrics page."""
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    series = 0
    models: set[str] = set()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            series += 1
            if "model" in s.labels:
                models.add(s.labels["model"])
    return len(text), series, models


async def test_unique_model_strings_never_grow_metrics(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, POOL_MAX_SOCKETS=4)
    worker = stack.workers[0]
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as c:
        async def batch(prefix: str, n: int) -> None:
            for start in range(0, n, 8):
                ids = [f"{prefix}{i}" for i in range(start, min(n, start + 8))]
                for cid in ids:
                    await c.send(type="start", context_id=cid, voice=VOICE, text="Hi.", end=True,
                                 model=f"eleven_{cid}_" + "x" * 200, cache=False)
                await c.pump_until(lambda cl, ids=ids: all(cl.ended(i) for i in ids), 60)
                for cid in ids:
                    assert c.result(cid).final is not None, c.result(cid).error

        await batch("warm", 4)  # the "other" series exist from here on
        gw0, wk0 = await scrape(http, stack.base), await scrape(http, worker.base_url)
        await batch("m", 300)
        gw1, wk1 = await scrape(http, stack.base), await scrape(http, worker.base_url)
    for before, after in ((gw0, gw1), (wk0, wk1)):
        assert after[1] == before[1], (before[:2], after[:2])  # not one series more
        assert after[0] - before[0] < 2048  # only counters' digits grew
        assert after[2] <= KNOWN_MODELS | {OTHER}
    assert OTHER in gw1[2] and OTHER in wk1[2]
    report("metrics_unique_models", contexts=300, gateway_bytes=(gw0[0], gw1[0]), worker_bytes=(wk0[0], wk1[0]))
