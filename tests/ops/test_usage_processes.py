"""Usage metering across real processes: two gateway processes, one worker process, the emulator upstream.

Usage written by either gateway is one key's usage, readable from either; each gateway's Prometheus
counters hold exactly what it served, with no key label; the opt-in per-tenant exporter reads the
cluster-wide numbers. The procs fixture also fails the test on any traceback or never-retrieved task
exception in the services' logs (the usage writer runs as a background task).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, run_emulator
from prometheus_client.parser import text_string_to_metric_families

from tests.compat.elclient import ElClient
from tests.support.procs import Procs
from tests.support.stack import NativeClient

ADMIN_TOKEN = "admtok-" + uuid.uuid4().hex
EL_KEY = "sk_fake_" + uuid.uuid4().hex
NATIVE_TEXT = "Native words go through the first gateway."
EL_TEXT = "And these through the second one."


async def _json(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def _usage_samples(http: aiohttp.ClientSession, base: str, path: str = "/metrics",
                         headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, str], float]]:
    async with http.get(base + path, headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name.startswith(("tts_usage_", "tts_tenant_"))]


async def _until(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_two_gateway_processes_meter_one_key_and_export_without_key_labels(procs: Procs,
                                                                                  redis_url: str) -> None:
    async with run_emulator(EmulatorConfig(api_key=EL_KEY)) as emu:
        secrets = {"ADMIN_TOKEN": ADMIN_TOKEN, "ELEVENLABS_API_KEY": EL_KEY}
        worker = procs.worker(redis_url, PROVIDERS="elevenlabs", ELEVENLABS_BASE_URL=emu.http_url,
                              ELEVENLABS_VOICES=DEFAULT_VOICE_ID, DEFAULT_VOICE=DEFAULT_VOICE_ID, **secrets)
        gw_env = {"AUTH_DISABLED": False, "CACHE_ENABLED": False, "METRICS_PER_TENANT": True,
                  "DEFAULT_VOICE": DEFAULT_VOICE_ID, **secrets}
        gw1 = procs.gateway(redis_url, name="gateway1", **gw_env)
        gw2 = procs.gateway(redis_url, name="gateway2", **gw_env)
        await procs.ready(worker, gw1, gw2)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(gw1.base_url + "/admin/keys", headers=admin, json={"name": "metered"}) as r:
                assert r.status == 201, await r.text()
                created = await r.json()
            key = {"xi-api-key": created["key"]}
            async with NativeClient.connect(gw1.base_url, http, headers=key) as c:
                res = await c.speak("n", NATIVE_TEXT, voice=DEFAULT_VOICE_ID, format="pcm_16000", timeout=60)
            assert res.final is not None, res.error
            assert res.final["billed_chars"] == len(NATIVE_TEXT) and res.final["cached_chars"] == 0
            assert abs(res.final["audio_seconds"] - len(res.audio) / 32000) < 0.002
            async with ElClient.connect(gw2.base_url, http, voice=DEFAULT_VOICE_ID, headers=key,
                                        output_format="pcm_16000") as el:
                await el.send(text=" ", context_id="e")
                await el.send(text=EL_TEXT, context_id="e")
                await el.send(context_id="e", close_context=True)
                await el.pump_until(lambda c: c.final("e"), timeout=60)
            final = next(f for f in el.frames if f.get("isFinal"))
            assert final["billedChars"] == len(EL_TEXT) and final["cachedChars"] == 0
            both = len(NATIVE_TEXT) + len(EL_TEXT)

            # One key, two gateways: either one reads the sum.
            status, mine = await _until(lambda: _json(http, gw2.base_url + "/v1/usage", key),
                                        lambda r: r[1]["total"]["billed_chars"] >= both)
            assert status == 200 and mine["total"]["billed_chars"] == mine["total"]["synthesized_chars"] == both
            seconds = len(res.audio) / 32000 + final["audioSeconds"]
            assert abs(mine["total"]["audio_seconds"] - seconds) < 0.01
            status, summary = await _json(http, gw1.base_url + "/admin/usage", admin)
            assert status == 200 and summary["total"]["billed_chars"] == both and summary["total"]["contexts"] == 2

            # Each process counts what it served, by provider and model, never by key.
            for gw, chars in ((gw1, len(NATIVE_TEXT)), (gw2, len(EL_TEXT))):
                samples = await _usage_samples(http, gw.base_url)
                billed = [(lab, v) for name, lab, v in samples if name == "tts_usage_billed_characters_total"]
                assert [v for lab, v in billed if lab["provider"] == "elevenlabs"] == [chars], billed
                assert all(set(lab) <= {"provider", "model"} for _, lab, _ in samples), samples

            # The opt-in per-tenant view: cluster-wide, from either gateway, admin only.
            async with http.get(gw2.base_url + "/metrics/tenants") as r:
                assert r.status == 401
            tenants = await _usage_samples(http, gw2.base_url, "/metrics/tenants", admin)
            assert ("tts_tenant_billed_characters_total", {"key_id": created["id"]}, float(both)) in tenants
