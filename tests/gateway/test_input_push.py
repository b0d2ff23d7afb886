"""Input delivery to a running job on a real Redis: the gateway's Dispatcher against the worker's InputRouter.

Every input reaches the job in order (before or after the worker listens), while a streamed job's
list carries a TTL set once per job rather than per token, so a list whose worker died still goes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from gateway.dispatch import CANCEL_TTL_S, INPUT_TTL_S, Dispatcher
from gateway.input_ttl import InputTtlRecord
from worker.inputs import InputRouter, JobInput

from shared import keys, protocol
from shared.pubsub import PubSubHub


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    yield r
    await r.aclose()


@pytest.fixture
async def router(redis_url: str) -> AsyncIterator[InputRouter]:
    """The worker's side, on its own connections as in a worker process."""
    r = aioredis.Redis.from_url(redis_url)
    hub = PubSubHub(r, service="worker")
    await hub.start()
    yield InputRouter(r, hub)
    await hub.close()
    await r.aclose()


async def _calls(r: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _texts(inp: JobInput, n: int) -> list[str]:
    out = []
    async with asyncio.timeout(10):
        for _ in range(n):
            msg = await inp.get()
            assert isinstance(msg, protocol.TextInput), msg
            out.append(msg.text)
    return out


async def test_streamed_tokens_arrive_in_order_and_the_list_keeps_one_ttl(
        redis: aioredis.Redis, router: InputRouter) -> None:
    dispatcher = Dispatcher(redis, "q")
    job_id = uuid.uuid4().hex
    words = [f"w{i} " for i in range(500)]
    expires_before = await _calls(redis, "expire")
    for seq, word in enumerate(words[:20], 1):  # sent before the worker listens: replayed from the list
        await dispatcher.push_input(job_id, protocol.TextInput(seq, word))
    inp = await router.open(job_id)
    for seq, word in enumerate(words[20:], 21):
        await dispatcher.push_input(job_id, protocol.TextInput(seq, word))
    assert await _texts(inp, len(words)) == words
    # The running job's list holds every token and carries a TTL, written once for the job, not per token.
    assert await redis.llen(keys.input_list(job_id)) == len(words)
    assert INPUT_TTL_S - 5 <= await redis.ttl(keys.input_list(job_id)) <= INPUT_TTL_S
    assert await _calls(redis, "expire") - expires_before == 1
    # A retry is a new job id: its first push sets its own list's TTL.
    retry_id = uuid.uuid4().hex
    await dispatcher.push_input(retry_id, protocol.TextInput(1, "again"))
    assert INPUT_TTL_S - 5 <= await redis.ttl(keys.input_list(retry_id)) <= INPUT_TTL_S
    await router.close(job_id)  # unsubscribes; the runner deletes the list with the job's keys
    assert await redis.publish(keys.input_channel(job_id), b"late") == 0


async def test_a_dead_workers_list_expires_and_a_long_stream_keeps_its_list(redis: aioredis.Redis) -> None:
    ttl_s = 2
    dispatcher = Dispatcher(redis, "q", input_ttl_s=ttl_s)
    job_id = uuid.uuid4().hex
    listed = keys.input_list(job_id)
    # Streaming for twice the TTL to a job whose worker died (nobody deletes the list): every push
    # keeps it alive, because the TTL is refreshed once half of it is spent.
    t0, seq = time.monotonic(), 0
    while time.monotonic() - t0 < 2 * ttl_s:
        seq += 1
        await dispatcher.push_input(job_id, protocol.TextInput(seq, "tok "))
        await asyncio.sleep(0.05)
    assert await redis.llen(listed) == seq
    assert 0 < await redis.pttl(listed) <= ttl_s * 1000
    # Then the stream stops: the list goes by itself within the TTL.
    async with asyncio.timeout(ttl_s + 3):
        while await redis.exists(listed):
            await asyncio.sleep(0.1)


async def test_lists_recreated_or_reset_behind_the_gateways_back_still_expire(
        redis: aioredis.Redis, router: InputRouter) -> None:
    dispatcher = Dispatcher(redis, "q")
    job_id = uuid.uuid4().hex
    listed = keys.input_list(job_id)
    await dispatcher.push_input(job_id, protocol.TextInput(1, "first "))
    await router.open(job_id)
    await router.close(job_id)  # the job ended: its worker unsubscribed and (runner) deleted the list
    await redis.delete(listed)
    # A late input recreates the list although this gateway set its TTL a moment ago.
    await dispatcher.push_input(job_id, protocol.Cancel(2, "cancelled"))
    assert await redis.llen(listed) == 1
    assert INPUT_TTL_S - 5 <= await redis.ttl(listed) <= INPUT_TTL_S
    # After forget() (a dead worker's job) the next push sets the TTL in its own round trip.
    await dispatcher.forget(job_id)
    await dispatcher.push_input(job_id, protocol.TextInput(3, "late "))
    assert INPUT_TTL_S - 5 <= await redis.ttl(listed) <= INPUT_TTL_S
    # abandon() leaves a short-lived Cancel; a push after it cannot make that list immortal.
    await dispatcher.abandon([job_id])
    assert 0 < await redis.ttl(listed) <= CANCEL_TTL_S
    await dispatcher.push_input(job_id, protocol.TextInput(4, "later "))
    assert 0 < await redis.ttl(listed) <= INPUT_TTL_S


def test_the_ttl_record_is_bounded() -> None:
    record = InputTtlRecord(ttl_s=3600, max_jobs=3)
    assert all(record.due(f"job{i}") for i in range(10))
    assert len(record) == 3
    assert not record.due("job9")  # recent: no EXPIRE
    assert record.due("job0")  # pushed out by newer jobs: sets the TTL again, which is always safe
    stale = InputTtlRecord(ttl_s=0)
    assert stale.due("a") and stale.due("a")  # half of no TTL has always passed: refresh every time
    assert len(stale) == 1
