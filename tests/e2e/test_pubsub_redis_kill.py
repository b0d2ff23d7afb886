"""Redis killed under sessions that subscribe and unsubscribe: every failure is a Redis error, none is lost.

Found by ``test_run_command``'s Redis kill: the gateway logged "Error handling request ... unable to
perform operation on <TCPTransport closed=True ...>; the handler is closed". The hub's one pub/sub
connection is read by its reader task while sessions write SUBSCRIBE/UNSUBSCRIBE on it; when Redis dies,
a write can find the transport already closed (uvloop, which the gateway and workers run on, raises
RuntimeError where asyncio's transport would not) or its writer already torn down by redis-py's
concurrent disconnect (AttributeError). Neither is a RedisError, so callers that handle an outage
(``SynthesisSession.open``/``close``) let it escape the request handler. A subscribe whose confirmation
the reader had already failed also left that failure unretrieved ("Future exception was never retrieved").
"""

from __future__ import annotations

import asyncio
import collections
import gc
from typing import Any

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from shared.pubsub import PubSubHub
from shared.redis_server import RedisServer

TRIALS = 10
SESSIONS = 8


async def _one_kill(outcomes: collections.Counter[str]) -> None:
    server = RedisServer().start()
    redis = aioredis.Redis.from_url(server.url, socket_timeout=2)
    hub = PubSubHub(redis, service="test")
    await hub.start()
    stop = asyncio.Event()

    async def session(k: int) -> None:  # what SynthesisSession.open/close do, back to back
        n = 0
        while not stop.is_set():
            n += 1
            channel = f"tts:test:{k}:{n}"
            try:
                await hub.subscribe(channel, lambda _b: None, timeout=0.5)
                outcomes["subscribed"] += 1
            except (TimeoutError, RedisError, OSError) as e:  # what SynthesisSession.open handles
                outcomes[f"subscribe: {type(e).__name__}"] += 1
            except Exception as e:  # noqa: BLE001 -- recorded: it would escape the request handler
                outcomes[f"ESCAPED subscribe: {type(e).__name__}: {e}"] += 1
            try:
                await hub.unsubscribe(channel)
            except Exception as e:  # noqa: BLE001 -- recorded: unsubscribe handles an outage itself
                outcomes[f"ESCAPED unsubscribe: {type(e).__name__}: {e}"] += 1
            await asyncio.sleep(0)

    sessions = [asyncio.create_task(session(k)) for k in range(SESSIONS)]
    try:
        await asyncio.sleep(0.2)
        server.kill()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*sessions)
        await hub.close()
        await redis.aclose()
        server.stop()
    gc.collect()  # an unretrieved future's failure is reported when it is collected


def test_a_redis_kill_under_subscribing_sessions_raises_only_redis_errors() -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    loop_errors: list[str] = []

    async def main() -> None:
        def record(_loop: Any, context: dict[str, Any]) -> None:
            loop_errors.append(str(context.get("message")))

        asyncio.get_running_loop().set_exception_handler(record)
        for _ in range(TRIALS):
            await _one_kill(outcomes)
        gc.collect()

    uvloop.run(main())  # the loop the gateway and the workers run on
    print(f"\n{dict(outcomes)}")
    assert outcomes["subscribed"] > 0
    assert not [k for k in outcomes if k.startswith("ESCAPED")], dict(outcomes)
    assert not loop_errors, loop_errors
