"""The arq queue contract shared by gateway and worker: function name, job serialization, key layout.

This is the only module that knows how arq lays out its keys (``arq:job:<id>``, the in-progress
lock, the retry counter, the result) and its job payload. The gateway writes jobs without
``ArqRedis.enqueue_job`` and purges them with a script; the worker claims them with a script: both
take every key name and prefix from here, so an arq upgrade that moves a key is one edit.

Jobs are msgpack, not arq's default pickle: unpickling what sits in Redis would let anyone who can
write there run code in every worker.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import DeserializationError, deserialize_job_raw, serialize_job
from arq.utils import timestamp_ms

from shared import protocol
from shared.errors import ProtocolError

JOB_FUNCTION = "synthesize"
# A streaming job that has not started within this long is useless to its listener.
JOB_EXPIRES_MS = 120_000

# Prefixes for Lua scripts that build a job's keys from its id inside Redis (claim, purge, depth).
JOB_KEY_PREFIX = job_key_prefix
LOCK_KEY_PREFIX = in_progress_key_prefix
RETRY_KEY_PREFIX = retry_key_prefix


def job_key(job_id: str) -> str:
    """arq's job definition key (the payload; its expiry is the job's)."""
    return job_key_prefix + job_id


def lock_key(job_id: str) -> str:
    """arq's in-progress lock: present while a worker runs the job."""
    return in_progress_key_prefix + job_id


def job_keys(job_id: str) -> list[str]:
    """arq's per-job keys (definition, lock, retry counter, result)."""
    return [job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id,
            result_key_prefix + job_id]


def now_ms() -> int:
    """arq's clock for queue scores (epoch milliseconds)."""
    return timestamp_ms()


def job_serializer(obj: Any) -> bytes:
    """arq job/result serializer.

    arq serializes a failure record itself (``job expired``, ``max retries exceeded``, aborted before
    start) with the exception object as its result, even with ``keep_result=0``; msgpack cannot pack
    an exception, so arq logged "error serializing result" with a traceback. The exception travels as
    its type and message instead.
    """
    return msgpack.packb(obj, use_bin_type=True, default=_exception_as_text)


def _exception_as_text(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def job_deserializer(data: bytes) -> Any:
    """arq job/result deserializer."""
    return msgpack.unpackb(data, raw=False)


def job_payload(spec: protocol.JobSpec) -> bytes:
    """The value of arq's job key for this spec, exactly as ``ArqRedis.enqueue_job`` would write it."""
    return serialize_job(JOB_FUNCTION, (protocol.encode(spec),), {}, None, int(time.time() * 1000),
                         serializer=job_serializer)


def unpack_payload(payload: bytes) -> tuple[str, tuple[Any, ...], dict[str, Any], int] | None:
    """An arq job payload as (function name, args, kwargs, enqueue time ms); None if undecodable."""
    try:
        function, args, kwargs, _try, enqueue_ms = deserialize_job_raw(payload, deserializer=job_deserializer)
    except DeserializationError:
        return None
    return function, tuple(args), dict(kwargs), int(enqueue_ms)


def spec_from_payload(payload: bytes | None) -> protocol.JobSpec | None:
    """The JobSpec inside an arq job payload, None if it is not one of ours (another app's job, corrupt)."""
    if not payload:
        return None
    try:
        _fn, args, _kw, _try, _t = deserialize_job_raw(payload, deserializer=job_deserializer)
        spec = protocol.decode(args[0])
    except (DeserializationError, ProtocolError, IndexError, TypeError):
        return None
    return spec if isinstance(spec, protocol.JobSpec) else None
