"""After real traffic through real processes, /metrics of gateway and worker say what happened, with
low-cardinality labels, and the logs hold one summary per context and job but no text and no secret."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, run_emulator

from tests.support.procs import Procs
from tests.support.scrape import Samples, scrape, value
from tests.support.stack import NativeClient

# Words no log line may ever contain: they exist only in what the clients asked to be spoken.
SECRET_TEXT = "Zanzibar walruses quietly juggle tangerines beside Kilimanjaro."
STREAMED = ["Quixotic ", "pelicans ", "memorize ", "Fibonacci ", "sequences. "]
SECRET_WORDS = ("Zanzibar", "walruses", "tangerines", "Kilimanjaro", "Quixotic", "pelicans", "Fibonacci")
ADMIN_TOKEN = "admtok-" + uuid.uuid4().hex
EL_KEY = "sk_fake_" + uuid.uuid4().hex
TOKEN_SECRET = "toksecret-" + uuid.uuid4().hex
ENDLESS = "Holding a worker slot until cancelled. "
# Label names the metrics module allows (DESIGN §2: provider, model, format, outcome, code, reason, state…).
ALLOWED_LABELS = {"provider", "model", "format", "cache", "outcome", "code", "reason", "state", "api", "service",
                  "role", "result", "op", "socket", "le", "generation"}

async def _until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_metrics_and_logs_after_real_traffic(procs: Procs, redis_url: str) -> None:
    async with run_emulator(EmulatorConfig(api_key=EL_KEY)) as emu:
        secrets = {"ADMIN_TOKEN": ADMIN_TOKEN, "ELEVENLABS_API_KEY": EL_KEY, "TOKEN_SECRET": TOKEN_SECRET}
        worker = procs.worker(redis_url, PROVIDERS="local,elevenlabs", ELEVENLABS_BASE_URL=emu.http_url,
                              POOL_MIN_SOCKETS=1, WORKER_MAX_JOBS=2, LOG_LEVEL="debug", **secrets)
        gw = procs.gateway(redis_url, AUTH_DISABLED=False, LOG_LEVEL="debug", JOB_START_TIMEOUT_S=30, **secrets)
        await procs.ready(worker, gw)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.base_url + "/admin/keys", headers=admin, json={"name": "ops-test"}) as resp:
                assert resp.status in (200, 201), await resp.text()
                client_key = (await resp.json())["key"]
            key_header = {"xi-api-key": client_key}
            async with NativeClient.connect(gw.base_url, http, headers=key_header) as a, \
                    NativeClient.connect(gw.base_url, http, headers=key_header) as b:
                await _traffic(a, b, gw, http)
                live = await scrape(http, gw.base_url)
                sessions = [a.session_id, b.session_id]
                clients = [a, b]
            async with http.get(gw.base_url + "/admin/status", headers=admin) as resp:
                assert resp.status == 200
            async with http.get(gw.base_url + "/admin/status", headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401

            async def settled() -> bool:
                g = await scrape(http, gw.base_url)
                return (value(g, "tts_active_sessions") == 0 and value(g, "tts_active_contexts") == 0
                        and value(g, "tts_queue_depth") == 0)
            await _until(settled)
            g = await scrape(http, gw.base_url)

            async def worker_done() -> bool:
                return value(await scrape(http, worker.base_url), "tts_jobs_total") >= 8
            await _until(worker_done)
            w = await scrape(http, worker.base_url)

    _check_gateway_metrics(live, g, clients)
    _check_worker_metrics(w)
    _check_loop_health(g, "gateway")
    _check_loop_health(w, "worker")
    ids = {cid for c in clients for cid in c.results} | set(filter(None, sessions)) | {
        r.started["job_id"] for c in clients for r in c.results.values() if r.started}
    _check_labels(g, ids)
    _check_labels(w, ids)
    _check_logs(gw, worker, [client_key, *secrets.values()], clients)


async def _traffic(a: NativeClient, b: NativeClient, gw: Any, http: aiohttp.ClientSession) -> None:
    pcm = {"format": "pcm_16000"}
    # Whole utterances on both providers, then the same phrase again (a phrase-cache hit).
    for cid, extra in (("l1", {}), ("e1", {"voice": DEFAULT_VOICE_ID}), ("l2", {})):
        res = await a.speak(cid, SECRET_TEXT, timeout=30, **pcm, **extra)
        assert res.final is not None and res.final["reason"] == "completed", res.events
    assert a.result("l2").final["cached"] is True  # type: ignore[index]
    # A streamed context, token by token.
    await a.send(type="start", context_id="s1", **pcm)
    for tok in STREAMED:
        await a.send(type="text", context_id="s1", text=tok)
    await a.send(type="end", context_id="s1")
    await a.pump_until(lambda c: c.ended("s1"), 30)
    # An error every client can see: a format nobody produces.
    await a.send(type="start", context_id="x1", format="pcm_12345", text="Anything.", end=True)
    await a.pump_until(lambda c: c.ended("x1"), 10)
    assert a.result("x1").error["code"] == "unsupported_format"  # type: ignore[index]
    # Backlog: two endless contexts hold both worker slots, three more wait in the queue.
    for cid in ("h1", "h2"):
        await b.send(type="start", context_id=cid, text=ENDLESS, flush=True, **pcm)
    await b.pump_until(lambda c: bool(c.result("h1").frames and c.result("h2").frames), 30)
    for cid in ("w1", "w2", "w3"):
        await b.send(type="start", context_id=cid, text=f"Waiting in line, number {cid[1]}.", end=True, **pcm)
    await b.pump_until(lambda c: all(c.result(x).started for x in ("w1", "w2", "w3")), 10)

    async def backlog_seen() -> bool:
        m = await scrape(http, gw.base_url)
        return value(m, "tts_queue_depth") == 3 and value(m, "tts_active_contexts") == 5
    await _until(backlog_seen, 5)
    busy = await scrape(http, gw.base_url)
    assert value(busy, "tts_active_sessions", api="native") == 2
    # Barge-in on the slot holders: the waiting three get their turn.
    for cid in ("h1", "h2"):
        await b.send(type="cancel", context_id=cid)
    await b.pump_until(lambda c: all(c.ended(x) for x in ("h1", "h2", "w1", "w2", "w3")), 30)
    for cid in ("w1", "w2", "w3"):
        assert b.result(cid).final["reason"] == "completed"  # type: ignore[index]


def _check_gateway_metrics(live: Samples, g: Samples, clients: list[NativeClient]) -> None:
    results = [r for c in clients for r in c.results.values()]
    client_bytes = sum(len(audio) for r in results for _, audio in r.frames)
    spoken = [r for r in results if r.final and r.final["reason"] == "completed"]
    assert len(spoken) == 7
    # Time to first audio: one observation per context that spoke (the two cancelled ones did too),
    # never more than the client itself waited.
    assert value(g, "tts_time_to_first_audio_seconds_count") == 9
    assert value(g, "tts_time_to_first_audio_seconds_count", cache="hit") == 1
    assert value(g, "tts_time_to_first_audio_seconds_count", provider="elevenlabs") == 1
    ttfa_sum = value(g, "tts_time_to_first_audio_seconds_sum")
    client_ttfa = sum(r.final["ttfa_ms"] for r in results if r.final and r.final["ttfa_ms"]) / 1000
    assert 0 < ttfa_sum <= client_ttfa + 0.05, (ttfa_sum, client_ttfa)
    # Queue wait: every job that started (6 jobs + 2 cancelled holders; the cache hit ran none).
    assert value(g, "tts_queue_wait_seconds_count") == 8
    assert 0 < value(g, "tts_queue_wait_seconds_sum") < 30
    assert value(g, "tts_context_duration_seconds_count") == 9
    assert value(g, "tts_context_duration_seconds_count", outcome="cancelled") == 2
    assert value(g, "tts_inter_chunk_gap_seconds_count") > 20
    assert "tts_underruns_total" in g
    assert value(g, "tts_audio_bytes_total", format="pcm_16000") == client_bytes
    assert abs(value(g, "tts_audio_seconds_total", format="pcm_16000") - client_bytes / 32000) < 0.01
    assert value(g, "tts_errors_total", code="unsupported_format") == 1
    assert value(g, "tts_contexts_total", outcome="completed") == 7
    assert value(g, "tts_contexts_total", outcome="cancelled") == 2
    assert value(g, "tts_cache_requests_total", result="hit") == 1
    # Gauges: live while the clients were connected, back to zero after.
    assert value(live, "tts_active_sessions", api="native") == 2
    assert value(g, "tts_active_sessions") == 0 and value(g, "tts_active_contexts") == 0
    assert value(g, "tts_queue_depth") == 0
    # Buckets resolve milliseconds.
    bounds = sorted(float(lab["le"]) for lab, _ in g["tts_time_to_first_audio_seconds_bucket"])
    assert bounds[0] <= 0.0005 and sum(b <= 0.01 for b in bounds) >= 5, bounds
    qbounds = sorted(float(lab["le"]) for lab, _ in g["tts_queue_wait_seconds_bucket"])
    assert qbounds[0] <= 0.0005


def _check_worker_metrics(w: Samples) -> None:
    assert value(w, "tts_jobs_total", provider="local", outcome="completed") == 5
    assert value(w, "tts_jobs_total", provider="elevenlabs", outcome="completed") == 1
    assert value(w, "tts_jobs_total", outcome="cancelled") == 2
    assert value(w, "tts_job_duration_seconds_count") >= 8
    # One observation per job that produced audio (measured once, by the job, whatever the provider).
    assert value(w, "tts_upstream_ttfb_seconds_count", provider="local") == 7
    assert value(w, "tts_upstream_ttfb_seconds_count", provider="elevenlabs") == 1
    assert 0 < value(w, "tts_upstream_ttfb_seconds_sum") / 8 < 5
    assert value(w, "tts_worker_active_jobs") == 0
    # The pool: one prewarmed socket open, no live context left, the context placed on a reused socket.
    assert value(w, "tts_pool_sockets", provider="elevenlabs", state="open") >= 1
    assert value(w, "tts_pool_live_contexts", provider="elevenlabs") == 0
    assert value(w, "tts_pool_socket_uses_total", provider="elevenlabs") == 1
    assert value(w, "tts_upstream_connect_seconds_count", provider="elevenlabs") >= 1
    assert value(w, "tts_pool_slot_wait_seconds_count", provider="elevenlabs") >= 1


def _check_loop_health(samples: Samples, service: str) -> None:
    # The loop-lag sampler ran all along (every 100 ms over several seconds of traffic), and the
    # collector's pauses are counted by generation, a closed set.
    assert value(samples, "tts_event_loop_lag_seconds_count", service=service) >= 10
    assert value(samples, "tts_event_loop_lag_seconds_sum", service=service) >= 0
    gens = {lab["generation"] for lab, _ in samples["tts_gc_pause_seconds_count"] if lab["service"] == service}
    assert gens and gens <= {"0", "1", "2"}, gens
    assert value(samples, "tts_gc_pause_seconds_count", service=service, generation="0") >= 1


def _check_labels(samples: Samples, ids: set[str]) -> None:
    hexid = re.compile(r"^[0-9a-f]{16,}$")
    for name, series in samples.items():
        assert len(series) < 200, f"{name} has {len(series)} series"
        for labels, _ in series:
            if name.startswith("tts_"):  # (the client library's own python_*/process_* have theirs)
                assert set(labels) <= ALLOWED_LABELS, (name, labels)
            for label in labels.values():
                assert label not in ids and not hexid.match(label) and len(label) <= 40, (name, labels)
                assert not any(word.lower() in label.lower() for word in SECRET_WORDS), (name, labels)


def _check_logs(gw: Any, worker: Any, secrets: list[str], clients: list[NativeClient]) -> None:
    for proc in (gw, worker):
        text = proc.output()
        for s in secrets:
            assert s not in text, f"{proc.name} logged a secret"
        for word in SECRET_WORDS:
            assert word not in text, f"{proc.name} logged text the client sent ({word!r})"
        for line in proc.stderr_path.read_text().splitlines():
            assert line.startswith("{") and json.loads(line)["event"], f"{proc.name}: not a JSON log line: {line}"
    # One summary per context (gateway) and per job (worker), each naming its session, context and job.
    contexts = {(c.session_id, cid) for c in clients for cid, r in c.results.items() if r.started}
    summaries = gw.events("context_summary")
    assert {(s["session_id"], s["context_id"]) for s in summaries} == contexts
    assert len(summaries) == len(contexts) and all(s["job_id"] for s in summaries)
    jobs = worker.events("job_summary")
    assert len(jobs) == 8 and all(j["session_id"] and j["context_id"] and j["job_id"] for j in jobs)
    assert {j["job_id"] for j in jobs} <= {s["job_id"] for s in summaries}
