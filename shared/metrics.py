"""Every Prometheus metric of both services, in one module.

Labels stay low-cardinality: provider, model, format, outcome, code, reason, state. Never a
session, context, key or text. Every label value comes from a closed set: a value that can come
from a client (a model id, a provider or error code that crossed Redis) goes through
:func:`model_label`, :func:`provider_label` or :func:`code_label` first, which map anything they do
not know to ``other``. (Formats are already closed: only names ``parse_format`` knows get that far.)
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.errors import ERRORS_BY_CODE

OTHER = "other"
# Models that get their own series; a request naming any other model is still served (the provider
# decides whether it knows it), it is only counted as ``other``.
KNOWN_MODELS: frozenset[str] = frozenset({
    "default", "piper",
    "eleven_flash_v2_5", "eleven_flash_v2", "eleven_turbo_v2_5", "eleven_turbo_v2", "eleven_multilingual_v2",
    "eleven_multilingual_v1", "eleven_monolingual_v1", "eleven_v3", "eleven_english_sts_v2",
    "eleven_multilingual_sts_v2",
})
KNOWN_PROVIDERS: frozenset[str] = frozenset({"local", "elevenlabs", "emulator"})


def model_label(model_id: str | None) -> str:
    """The ``model`` label for a requested model id: known ids as themselves, none as ``default``."""
    if not model_id:
        return "default"
    return model_id if model_id in KNOWN_MODELS else OTHER


def provider_label(provider: str) -> str:
    """The ``provider`` label: a provider this code base has, else ``other``."""
    return provider if provider in KNOWN_PROVIDERS else OTHER


def code_label(code: str) -> str:
    """The ``code``/``reason`` label for an error code: one from shared.errors, else ``other``."""
    return code if code in ERRORS_BY_CODE else OTHER

# Milliseconds resolve: 0.5 ms … 5 s, then a tail for slow upstreams.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                   0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)

# ---- gateway -----------------------------------------------------------------------------------------
TTFA = Histogram("tts_time_to_first_audio_seconds",
                 "Context start (or first text) to first audio frame sent to the client",
                 ["provider", "model", "format", "cache"], buckets=LATENCY_BUCKETS)
QUEUE_WAIT = Histogram("tts_queue_wait_seconds", "Job enqueue to job start on a worker",
                       buckets=LATENCY_BUCKETS)
CONTEXT_DURATION = Histogram("tts_context_duration_seconds", "Context start to final or error",
                             ["provider", "outcome"], buckets=DURATION_BUCKETS)
CHUNK_GAP = Histogram("tts_inter_chunk_gap_seconds", "Gap between consecutive audio frames of a context",
                      buckets=LATENCY_BUCKETS)
UNDERRUNS = Counter("tts_underruns_total",
                    "Audio frames that arrived after the audio before them had finished playing")
ACTIVE_SESSIONS = Gauge("tts_active_sessions", "Open client sessions (WebSocket and HTTP streams)", ["api"])
ACTIVE_CONTEXTS = Gauge("tts_active_contexts", "Contexts between start and final/error")
AUDIO_BYTES = Counter("tts_audio_bytes_total", "Audio bytes sent to clients", ["format"])
AUDIO_SECONDS = Counter("tts_audio_seconds_total", "Audio seconds sent to clients", ["format"])
CLIENT_ERRORS = Counter("tts_errors_total", "Errors reported to clients, by code", ["code"])
CONTEXTS = Counter("tts_contexts_total", "Contexts finished, by outcome", ["outcome"])
RETRIES = Counter("tts_context_retries_total", "Contexts re-enqueued before first audio", ["reason"])
SLOW_CONSUMERS = Counter("tts_slow_consumer_closes_total", "Sessions closed because the client stopped reading")
FANOUT_DROPPED = Counter("tts_fanout_dropped_total",
                         "Pub/sub messages for a channel this process no longer routes (session or job gone)")
REDIS_RECONNECTS = Counter("tts_redis_reconnects_total", "Reconnections to Redis", ["service", "role"])
QUEUE_DEPTH = Gauge("tts_queue_depth", "Jobs enqueued and not yet started by a worker (same value on every "
                    "gateway: take the max), refreshed every second")
CACHE_REQUESTS = Counter("tts_cache_requests_total", "Phrase-cache lookups", ["result"])
CACHE_BYTES = Counter("tts_cache_bytes_total", "Audio bytes served from or stored in the cache", ["op"])
CACHE_EVICTIONS = Counter("tts_cache_evictions_total", "Phrase-cache entries evicted to stay under the cap")
ADMISSION_REJECTIONS = Counter("tts_admission_rejections_total", "Contexts refused by a key's limits", ["code"])
# Usage metering (gateway/metering.py): summed over every key; a per-key view is /metrics/tenants (opt-in).
USAGE_BILLED_CHARS = Counter("tts_usage_billed_characters_total",
                             "Characters sent to a paid upstream (ElevenLabs), by ended contexts", ["provider", "model"])
USAGE_SYNTHESIZED_CHARS = Counter("tts_usage_synthesized_characters_total",
                                  "Characters freshly synthesized by any provider (the local voice included)",
                                  ["provider", "model"])
USAGE_CACHED_CHARS = Counter("tts_usage_cached_characters_total", "Characters answered from the phrase cache",
                             ["provider", "model"])
USAGE_AUDIO_SECONDS = Counter("tts_usage_audio_seconds_total", "Audio seconds delivered to clients",
                              ["provider", "model"])
USAGE_WRITE_FAILURES = Counter("tts_usage_write_failures_total",
                               "Usage increments dropped after Redis refused them on every retry")

# ---- worker ------------------------------------------------------------------------------------------
JOBS = Counter("tts_jobs_total", "Jobs finished by a worker, by outcome", ["provider", "outcome"])
JOB_DURATION = Histogram("tts_job_duration_seconds", "Job run time on a worker", ["provider"],
                         buckets=DURATION_BUCKETS)
WORKER_ACTIVE_JOBS = Gauge("tts_worker_active_jobs", "Jobs running on this worker")
LOCAL_STREAMS = Gauge("tts_local_voice_streams", "Open local-voice streams on this worker")
LOCAL_CAPACITY = Gauge("tts_local_voice_capacity_streams",
                       "Local-voice streams this worker keeps real-time (measured or LOCAL_VOICE_MAX_STREAMS)")
LOCAL_WAITING = Gauge("tts_local_voice_waiting_streams", "Local-voice streams waiting for a synthesis slot")
OVERLOADED = Counter("tts_overloaded_total", "Contexts refused because the worker was at capacity", ["provider"])
UPSTREAM_TTFB = Histogram("tts_upstream_ttfb_seconds", "First text sent upstream to first audio back",
                          ["provider", "model"], buckets=LATENCY_BUCKETS)
UPSTREAM_CONNECT = Histogram("tts_upstream_connect_seconds", "Upstream WebSocket connect time",
                             ["provider"], buckets=LATENCY_BUCKETS)
UPSTREAM_ERRORS = Counter("tts_upstream_errors_total", "Upstream failures, by reason", ["provider", "reason"])
POOL_SOCKETS = Gauge("tts_pool_sockets", "Pooled upstream sockets, by state", ["provider", "state"])
POOL_CONTEXTS = Gauge("tts_pool_live_contexts", "Live upstream contexts", ["provider"])
UPSTREAM_ACCOUNT_LEASES = Gauge("tts_upstream_account_leases",
                                "Upstream permits held account-wide (all workers), as last seen by this worker",
                                ["provider"])
UPSTREAM_SATURATED = Gauge("tts_upstream_saturated",
                           "1 while every upstream permit is taken or contexts wait for one (new ones may be "
                           "refused at once with upstream_busy)", ["provider"])
UPSTREAM_PERMIT_FAIL_OPEN = Counter("tts_upstream_permit_fail_open_total",
                                    "Contexts admitted on the per-worker limit alone: Redis was unreachable",
                                    ["provider"])
UPSTREAM_PERMIT_CREDIT = Counter("tts_upstream_permit_credit_total",
                                 "Account permits taken before Redis answered (credit), by what Redis then said: "
                                 "confirmed, or overdrawn (the account had filled meanwhile; the permit is kept)",
                                 ["provider", "outcome"])
POOL_SLOT_WAIT = Histogram("tts_pool_slot_wait_seconds", "Wait for an upstream context slot",
                           ["provider"], buckets=LATENCY_BUCKETS)
POOL_RECONNECTS = Counter("tts_pool_reconnects_total", "Upstream sockets replaced", ["provider", "reason"])
POOL_CONTEXT_RETRIES = Counter("tts_pool_context_retries_total",
                               "Contexts moved to another socket before any audio", ["provider"])
UPSTREAM_FAILOVERS = Counter("tts_upstream_failovers_total",
                             "Contexts resumed on another socket after audio went out (failover), by reason",
                             ["provider", "reason"])
POOL_SOCKET_USES = Counter("tts_pool_socket_uses_total",
                           "Contexts placed on a socket, by whether the socket was new or reused",
                           ["provider", "socket"])
POOL_HANDSHAKE_WAITS = Counter("tts_pool_context_waited_for_handshake_total",
                               "Contexts placed on a socket still connecting (they wait for its handshake)",
                               ["provider"])
POOL_SPARE_SLOTS = Gauge("tts_pool_spare_slots", "Free context slots on open, non-draining pooled sockets",
                         ["provider"])
POOL_TARGET_SOCKETS = Gauge("tts_pool_target_sockets",
                            "Sockets the pool keeps for its forecast demand and spare (growth ahead of demand)",
                            ["provider"])
PUBLISH_BATCH = Histogram("tts_publish_batch_size", "Frames per pipelined PUBLISH batch",
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
