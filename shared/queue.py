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
    """arq job/result serializer."""
    return msgpack.packb(obj, use_bin_type=True)


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
