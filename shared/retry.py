"""The one retry policy: who may try a failed context (or request) again, decided in one place.

Three parties retry, each at its own layer, and each asks :func:`decide`:

- ``worker_pool``: the ElevenLabs socket pool moves a context off a failed socket to another one
  (same job, same permit, the listener notices nothing), at most ``POOL_MAX_RETRIES`` times.
- ``gateway``: re-enqueues the context's job (any worker may take it), at most ``MAX_RETRIES``
  times (settings).
- ``client``: what the ``retryable`` flag sent to clients says (``TTSError.retryable``, error
  events, HTTP bodies, ``Retry-After``): sending the same request again may succeed.

The pool and the gateway never *re-run* a context once audio reached the listener (a re-run would
replay speech it already heard); the client flag ignores that, because the client owns its text and
decides whether repeating it is acceptable. The pool may still *resume* such a context (failover):
when its alignment says exactly where the listener stopped, it continues on another socket from the
next word, which repeats nothing. It asks with ``resumable=True``, the failover count as ``attempt``
and ``FAILOVER_MAX_PER_CONTEXT`` as the budget; the codes are the pool's column.

========================= ====== ======= ====== ===================================================
code                      pool   gateway client why
========================= ====== ======= ====== ===================================================
upstream_disconnected     yes    yes     yes    a socket dropped or failed to connect: another works
upstream_error            yes    yes     yes    a malformed frame or socket bug: another socket
upstream_timeout          yes    yes     yes    a stalled socket; the pool's deadline ends it
upstream_busy             yes    no      yes    the account is at its limit: the pool backs off and
                                                moves; another worker would wait for the same permits
upstream_rejected         no     no      no     bad voice, settings, key or quota: fails again
overloaded                --     yes     yes    this worker's local voice is full; another may not be
shutting_down             --     yes     yes    the worker drained mid-job; another worker runs it
worker_lost               --     yes     yes    the worker died (heartbeat); another runs it
service_unavailable       --     yes     yes    Redis blinked on the worker's side
timeout                   --     no      yes    the gateway's own deadline: it already gave up
no_workers, job_expired   --     no      yes    nobody took the job in time: re-queueing cannot help
queue_reset               --     no      yes    an operator emptied the queues on purpose
rate_limited              --     no      yes    the key's rate: later, not now
anything else             no     no      no     client input, quotas, internal errors
========================= ====== ======= ====== ===================================================

(``--``: that party never sees the code.) A pool retry does not count against the gateway's.
"""

from __future__ import annotations

from typing import Literal

Asker = Literal["gateway", "worker_pool", "client"]

POOL_MAX_RETRIES = 2  # a context is placed at most three times on this worker before the gateway's turn
GATEWAY_MAX_RETRIES = 1  # the default of the MAX_RETRIES setting

_TRANSIENT_UPSTREAM = frozenset({"upstream_disconnected", "upstream_error", "upstream_timeout"})
POOL = _TRANSIENT_UPSTREAM | {"upstream_busy"}
GATEWAY = _TRANSIENT_UPSTREAM | {"overloaded", "shutting_down", "worker_lost", "service_unavailable"}
CLIENT = POOL | GATEWAY | {"timeout", "no_workers", "job_expired", "queue_reset", "rate_limited"}

_TABLE: dict[str, frozenset[str]] = {"worker_pool": POOL, "gateway": GATEWAY, "client": CLIENT}
_DEFAULT_RETRIES = {"worker_pool": POOL_MAX_RETRIES, "gateway": GATEWAY_MAX_RETRIES}


def decide(code: str, *, audio_sent: bool, attempt: int, asker: Asker, max_retries: int | None = None,
           resumable: bool = False) -> bool:
    """May ``asker`` try again after attempt number ``attempt`` (1 = the first try) failed with ``code``?

    ``audio_sent``: a chunk of this context already reached the listener. ``max_retries`` overrides
    the asker's default budget (the gateway passes its ``MAX_RETRIES`` setting); the client's
    answer depends on the code alone. ``resumable``: the pool can continue exactly where the
    listener's audio stopped, so audio already sent does not forbid it (only the pool can).
    """
    if code not in _TABLE[asker]:
        return False
    if asker == "client":
        return True
    if audio_sent and not (resumable and asker == "worker_pool"):
        return False
    budget = _DEFAULT_RETRIES[asker] if max_retries is None else max_retries
    return attempt <= budget
