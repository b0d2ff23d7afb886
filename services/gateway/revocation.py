"""Close the open sessions of a revoked key within ``REVOCATION_CHECK_S``.

A revoke deletes the key's lookup entry, so the key fails its next authentication; but a
WebSocket authenticates once, at its start, and a session that keeps running contexts would
otherwise outlive its key for ever. Every few seconds this process asks Redis, in one pipelined
round trip, whether any key behind one of its open sessions was revoked (the ``revoked_at`` field
of the key's record, which a token's key shares), and ends those sessions with ``unauthorized``:
the native socket closes with 4401, the ElevenLabs-compatible ones with their protocol's 1008.

A periodic check rather than a pub/sub notice: it costs one command per distinct open key per
interval, needs no delivery guarantee (a notice missed during a Redis blip would be lost for
good) and also catches a revoke made straight in Redis by the keys CLI.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from gateway.auth.keystore import F_REVOKED
from gateway.auth.principal import DEV_KEY_ID
from gateway.services import GatewayServices
from shared import keys
from shared.errors import Unauthorized
from shared.logging import get_logger

log = get_logger(__name__)


async def watch_forever(services: GatewayServices) -> None:
    """Check the keys of this process's open sessions every ``revocation_check_s``."""
    notified: set[str] = set()
    while True:
        await asyncio.sleep(services.settings.revocation_check_s)
        try:
            await check_once(services, notified)
        except (RedisError, OSError) as e:
            log.warning("revocation_check_failed", error=type(e).__name__)
        except Exception:
            log.exception("revocation_check_crashed")


async def check_once(services: GatewayServices, notified: set[str]) -> int:
    """One pass; returns how many sessions were told to close. ``notified`` avoids telling one twice."""
    sessions = list(services.registry.sessions.values())
    notified.intersection_update(s.id for s in sessions)  # bounded by the open sessions
    tenants = sorted({s.tenant for s in sessions if s.tenant and s.tenant != DEV_KEY_ID})
    if not tenants:
        return 0
    pipe = services.redis.pipeline(transaction=False)
    for key_id in tenants:
        pipe.hget(keys.key_record(key_id), F_REVOKED)
    revoked = {key_id for key_id, at in zip(tenants, await pipe.execute(), strict=True) if at}
    closed = 0
    for session in sessions:
        if session.tenant in revoked and session.id not in notified and not session.closed:
            notified.add(session.id)
            session.close_with(Unauthorized("the API key was revoked"))
            closed += 1
    if closed:
        log.info("revoked_sessions_closed", sessions=closed, keys=len(revoked))
    return closed
