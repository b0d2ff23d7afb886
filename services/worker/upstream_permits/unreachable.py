"""Redis unreachable: how the account's permits behave while Redis does not answer.

Fail OPEN to the per-worker limit (the pool still counts ``UPSTREAM_CONCURRENCY`` per process),
counted in ``tts_upstream_permit_fail_open_total`` and logged once per outage. Redis down also stops
arq handing out jobs, so only contexts of jobs already running get in this way, whereas failing
closed would turn every Redis blip (a restart) into ``upstream_busy`` for work that would otherwise
succeed. Such permits are registered by the account's next refresh once Redis answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.logging import get_logger
from shared.metrics import UPSTREAM_PERMIT_FAIL_OPEN

log = get_logger(__name__)

# One script call; slower than this, Redis counts as unreachable. Generous: a loaded host's event-loop
# stall must not pass for an outage (that would fail open). A stopped Redis refuses at once anyway.
OP_TIMEOUT_S = 2.0
# After a failure, acquire fails open at once for this long rather than each caller waiting out a hung
# Redis; any call that gets through (the refresher keeps trying in the background) ends it early.
DOWN_S = 3.0


class Unreachable(Exception):
    """A Redis call failed or took longer than ``OP_TIMEOUT_S``."""


class OutageGuard:
    """Runs the account's script calls with a deadline and tracks whether Redis is down, as last seen."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.ongoing = False  # an outage was logged and no call has got through since
        self._down_until = 0.0  # monotonic; before it, callers fail open without trying Redis

    def down(self) -> bool:
        """Did a call fail within the last ``DOWN_S`` with none getting through since?"""
        return time.monotonic() < self._down_until

    async def call(self, script: AsyncScript, keys_: list[str], args: list[Any]) -> Any:
        """``script``'s reply; raise :class:`Unreachable` if Redis fails it or is too slow."""
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                result = await script(keys=keys_, args=args)
        except (RedisError, OSError, TimeoutError) as e:
            self._down_until = time.monotonic() + DOWN_S
            if not self.ongoing:
                self.ongoing = True
                log.warning("upstream_permits_unavailable", error=type(e).__name__,
                            fallback="per-worker limit")
            raise Unreachable from e
        self._down_until = 0.0
        if self.ongoing:
            self.ongoing = False
            log.info("upstream_permits_restored")
        return result

    def count_fail_open(self) -> None:
        """A permit granted without Redis (the caller keeps it; the next refresh registers it)."""
        UPSTREAM_PERMIT_FAIL_OPEN.labels(self.provider).inc()
