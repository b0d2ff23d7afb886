"""Which jobs' input lists this gateway has put a TTL on, and when: so a streamed token skips EXPIRE.

A token-streamed context pushes one input per LLM token. The list's TTL only bounds a leak if the
job's worker dies (the worker deletes the list when the job ends), so it needs setting once per job
and refreshing before it runs out, not on every push: an EXPIRE per token was a third of the
commands of every token. The record is per job id, and a retry runs under a new job id
(``ContextState.new_attempt``), so its first push sets the TTL again.

Forgetting a job is always safe: its next push just sets the TTL again. So the record is bounded
twice: entries older than the refresh age are dropped (they are due anyway), and past ``max_jobs``
the oldest goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_JOBS = 65_536


class InputTtlRecord:
    """Per job id, when this gateway last set its input list's TTL (bounded; insertion order is time order)."""

    def __init__(self, ttl_s: int, max_jobs: int = MAX_JOBS) -> None:
        self.ttl_s = ttl_s
        # Refresh once half the TTL has passed: a list being streamed to never gets near expiry.
        self._refresh_after_s = ttl_s / 2
        self._max_jobs = max_jobs
        # An OrderedDict, not a dict: dropping from the front of a dict makes each next lookup of its
        # first item scan the holes left behind.
        self._set_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._set_at)

    def due(self, job_id: str) -> bool:
        """Whether this push must (re)set the TTL; if so, it is recorded as set now."""
        now = time.monotonic()
        self._drop_stale(now)
        if job_id in self._set_at:
            return False  # set less than the refresh age ago (_drop_stale removed older ones)
        self._set_at[job_id] = now
        if len(self._set_at) > self._max_jobs:
            self._set_at.popitem(last=False)
        return True

    def forget(self, job_id: str) -> None:
        """The TTL may not be (or no longer be) in place: the next push sets it."""
        self._set_at.pop(job_id, None)

    def _drop_stale(self, now: float) -> None:
        while self._set_at:
            oldest, at = next(iter(self._set_at.items()))
            if now - at < self._refresh_after_s:
                return
            del self._set_at[oldest]
