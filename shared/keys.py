"""Every Redis key and channel name, in one place (prefix ``tts:``); nothing builds them inline elsewhere."""

from __future__ import annotations

PREFIX = "tts:"

# Workers subscribe here; a gateway publishes after each enqueue so a worker starts the job at once
# instead of at its next poll.
WAKE_CHANNEL = PREFIX + "wake"

WORKER_HEARTBEAT_PREFIX = PREFIX + "worker:"
WORKER_HEARTBEAT_PATTERN = WORKER_HEARTBEAT_PREFIX + "*"
GATEWAY_HEARTBEAT_PREFIX = PREFIX + "gateway:"
GATEWAY_HEARTBEAT_PATTERN = GATEWAY_HEARTBEAT_PREFIX + "*"


def session_channel(session_id: str) -> str:
    """Pub/sub channel a worker publishes a session's audio, finals and errors to."""
    return f"{PREFIX}session:{session_id}"


def input_list(job_id: str) -> str:
    """List holding every input message for a job, so a worker that starts late misses nothing."""
    return f"{PREFIX}input:{job_id}"


def input_channel(job_id: str) -> str:
    """Pub/sub channel carrying the same input messages live once the worker listens."""
    return f"{PREFIX}input:{job_id}"


def worker_heartbeat(worker_id: str) -> str:
    """Key a live worker refreshes; it expires when the worker dies."""
    return WORKER_HEARTBEAT_PREFIX + worker_id


def gateway_heartbeat(gateway_id: str) -> str:
    """Key a live gateway refreshes with its session counts."""
    return GATEWAY_HEARTBEAT_PREFIX + gateway_id


def upstream_leases(account: str) -> str:
    """Sorted set of an upstream account's live generation permits: holder -> lease expiry (ms, Redis clock).

    The braces are a cluster hash tag: every key of one account lives in one slot, so one script may
    touch them all (the same holds for the other ``upstream_*`` keys below).
    """
    return f"{PREFIX}upstream:{{{account}}}:leases"


def upstream_waiters(account: str) -> str:
    """Sorted set of tickets waiting for an account permit, scored by arrival (FIFO order)."""
    return f"{PREFIX}upstream:{{{account}}}:waiters"


def upstream_waiter_deadlines(account: str) -> str:
    """The same tickets scored by expiry: a waiter that stops polling (crashed) leaves the line."""
    return f"{PREFIX}upstream:{{{account}}}:waiter-deadlines"


def upstream_ticket_seq(account: str) -> str:
    """Counter that numbers tickets in arrival order."""
    return f"{PREFIX}upstream:{{{account}}}:seq"


def upstream_wake(account: str, holder: str) -> str:
    """List a releaser pushes a waiting ticket to when a permit is there for it; one per provider instance."""
    return f"{PREFIX}upstream:{{{account}}}:wake:{holder}"


def worker_id_from_key(key: str) -> str:
    """Inverse of :func:`worker_heartbeat`."""
    return key[len(WORKER_HEARTBEAT_PREFIX):]


# Client keys, quotas and usage (see gateway/auth).
CLIENT_KEY_PREFIX = PREFIX + "key:"
CLIENT_KEY_INDEX = PREFIX + "keys"


def client_key(key_hash: str) -> str:
    """The id of the client key whose SHA-256 is ``key_hash`` (deleted when the key is revoked)."""
    return CLIENT_KEY_PREFIX + key_hash


def key_record(key_id: str) -> str:
    """Hash of one client key's record (name, limits, revoked_at), addressed by its id."""
    return f"{PREFIX}keyrec:{key_id}"


def key_usage(key_id: str, day: str) -> str:
    """Hash of a key's usage on one UTC day (YYYY-MM-DD): quota fields and metering counters."""
    return f"{PREFIX}usage:{key_id}:{day}"


# Usage hashes (per key per day, and the day's total) live this long: a year of billing history and
# a month to spare. One small hash per key per day is the whole cost (keys are created by the operator).
USAGE_TTL_S = 400 * 86400


def usage_day_keys(day: str) -> str:
    """Sorted set of the key ids with usage on one UTC day, scored by characters (the day's most active)."""
    return f"{PREFIX}usage-keys:{day}"


def usage_day_total(day: str) -> str:
    """Hash of one UTC day's usage summed over every key (the same counters as :func:`key_usage`)."""
    return f"{PREFIX}usage-total:{day}"


def key_active_contexts(key_id: str) -> str:
    """Sorted set of a key's live context slots, scored by lease expiry, for its concurrency limit."""
    return f"{PREFIX}active:{key_id}"


def key_rate(key_id: str, window: int) -> str:
    """Request counter of a key for one rate-limit window."""
    return f"{PREFIX}rate:{key_id}:{window}"


# Phrase cache.
CACHE_PREFIX = PREFIX + "cache:"
# Digests scored by last use (LRU order), by expiry time, their sizes, and the sum of the sizes.
CACHE_INDEX = PREFIX + "cache-index"
CACHE_EXPIRY = PREFIX + "cache-expiry"
CACHE_SIZES = PREFIX + "cache-sizes"
CACHE_BYTES = PREFIX + "cache-bytes"


def cache_entry(digest: str) -> str:
    """Cached audio and alignment of one utterance."""
    return CACHE_PREFIX + digest
