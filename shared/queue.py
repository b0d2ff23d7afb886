"""The arq queue contract shared by gateway and worker: function name and job serialization.

Jobs are msgpack, not arq's default pickle: unpickling what sits in Redis would let anyone who can
write there run code in every worker.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import serialize_job

from shared import protocol

JOB_FUNCTION = "synthesize"
# A streaming job that has not started within this long is useless to its listener.
JOB_EXPIRES_MS = 120_000


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


def job_keys(job_id: str) -> list[str]:
    """arq's per-job keys (definition, lock, retry counter, result)."""
    return [job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id,
            result_key_prefix + job_id]
