"""The shared Redis client without redis-py's per-checkout read probe keeps the two promises the
probe made: a connection the server closed while it sat in the pool is replaced without the caller
seeing an error (and the command runs once), and a command interrupted mid-reply never hands its
late reply to the next caller of that connection.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.redis_client import create_redis


async def test_a_pooled_connection_the_server_closed_is_replaced_and_the_command_runs_once(redis_url: str) -> None:
    client = create_redis(redis_url, max_connections=1)  # one connection: the next command must use it
    killer = create_redis(redis_url)
    try:
        assert await client.incr("counter") == 1
        my_id = await client.client_id()
        assert await killer.client_kill_filter(_id=my_id) == 1
        await asyncio.sleep(0.05)  # the server's FIN reaches the pooled socket
        # The next command finds the connection dead, reconnects through the client's retry and runs once.
        assert await client.incr("counter") == 2
        assert await client.client_id() != my_id
        assert int(await killer.get("counter")) == 2
    finally:
        await client.aclose()
        await killer.aclose()


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_command_cancelled_before_its_reply_never_hands_that_reply_to_the_next_caller(
        redis_url: str, pipelined: bool) -> None:
    client = create_redis(redis_url, max_connections=1)
    other = create_redis(redis_url)
    try:
        await client.set("a", "value-of-a")
        # BLPOP blocks in Redis; cancelling it leaves its reply (pushed below) in flight on the socket.
        if pipelined:
            pipe = client.pipeline(transaction=False)
            pipe.blpop(["queue"], timeout=5)
            waiter = asyncio.ensure_future(pipe.execute())
        else:
            waiter = asyncio.ensure_future(client.blpop(["queue"], timeout=5))
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await other.rpush("queue", "late-reply")
        await asyncio.sleep(0.05)
        for _ in range(3):
            assert await client.get("a") == b"value-of-a"
    finally:
        await client.aclose()
        await other.aclose()
