"""Client keys in Redis: created, looked up, listed and revoked; only their SHA-256 is stored.

Layout (names in shared/keys.py): ``key_record(id)`` is a hash with the key's name and limits;
``client_key(sha256)`` maps a presented key to its id (deleted on revoke, so a revoked key fails
its very next lookup); ``CLIENT_KEY_INDEX`` orders ids by creation for listing. The key-limit
scripts (gateway/keylimits) read the limits straight from the record, so an edit or a revoke
applies to the next context of every open session on every gateway.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from gateway.auth.principal import Principal
from shared import keys

KEY_PREFIX = "tts_live_"
# Record fields the Lua key-limit scripts read too (keep in sync with gateway/keylimits/scripts.py).
F_QUOTA, F_MAX_CONTEXTS, F_RATE, F_REVOKED = "quota_chars", "max_contexts", "rate_per_minute", "revoked_at"
LIMIT_FIELDS = (F_QUOTA, F_MAX_CONTEXTS, F_RATE)


def hash_key(plaintext: str) -> str:
    """The stored form of a client key."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def looks_like_key(value: str) -> bool:
    """Cheap shape check before a Redis round trip."""
    return value.startswith(KEY_PREFIX) and 16 < len(value) < 200


@dataclass(frozen=True)
class KeyRecord:
    """A client key as stored (never its plaintext); ``None`` limits mean unlimited."""

    key_id: str
    name: str
    display: str
    quota_chars: int | None
    max_contexts: int | None
    rate_per_minute: int | None
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def principal(self, via: str = "key") -> Principal:
        """The identity handed to endpoints."""
        return Principal(key_id=self.key_id, name=self.name, max_contexts=self.max_contexts,
                         rate_per_minute=self.rate_per_minute, quota_chars=self.quota_chars, via=via)

    def to_json(self) -> dict[str, Any]:
        """Public view (admin API, CLI): everything but the secret."""
        return {"id": self.key_id, "name": self.name, "key_prefix": self.display,
                "quota_chars_per_day": self.quota_chars, "max_contexts": self.max_contexts,
                "rate_per_minute": self.rate_per_minute, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "active": self.active}

    @classmethod
    def from_hash(cls, key_id: str, raw: dict[bytes, bytes]) -> KeyRecord:
        """Parse the Redis hash."""
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(key_id=key_id, name=f.get("name", ""), display=f.get("display", ""),
                   quota_chars=_opt_int(f.get(F_QUOTA)), max_contexts=_opt_int(f.get(F_MAX_CONTEXTS)),
                   rate_per_minute=_opt_int(f.get(F_RATE)), created_at=float(f.get("created_at") or 0),
                   revoked_at=float(f[F_REVOKED]) if f.get(F_REVOKED) else None)


class KeyStore:
    """CRUD of client keys; used by the gateway (auth, admin API) and the keys CLI."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def create(self, name: str, *, quota_chars: int | None, max_contexts: int | None,
                     rate_per_minute: int | None) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the plaintext, which is never retrievable again."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + uuid.uuid4().hex[:16]
        rec = KeyRecord(key_id=key_id, name=name, display=plaintext[:len(KEY_PREFIX) + 4] + "…",
                        quota_chars=quota_chars, max_contexts=max_contexts, rate_per_minute=rate_per_minute,
                        created_at=round(time.time(), 3))
        digest = hash_key(plaintext)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.key_record(key_id), mapping={
            "name": name, "display": rec.display, "hash": digest, "created_at": rec.created_at,
            F_QUOTA: _field(quota_chars), F_MAX_CONTEXTS: _field(max_contexts), F_RATE: _field(rate_per_minute)})
        pipe.set(keys.client_key(digest), key_id)
        pipe.zadd(keys.CLIENT_KEY_INDEX, {key_id: rec.created_at})
        await pipe.execute()
        return rec, plaintext

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id`` (revoked or not), None if it never existed."""
        raw = await self._redis.hgetall(keys.key_record(key_id))  # type: ignore[misc]
        return KeyRecord.from_hash(key_id, raw) if raw else None

    async def by_secret(self, plaintext: str) -> KeyRecord | None:
        """The active record a presented key belongs to, else None."""
        key_id = await self._redis.get(keys.client_key(hash_key(plaintext)))
        if key_id is None:
            return None
        rec = await self.get(key_id.decode())
        return rec if rec is not None and rec.active else None

    async def list(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        ids = [i.decode() for i in await self._redis.zrange(keys.CLIENT_KEY_INDEX, 0, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(keys.key_record(key_id))
        return [KeyRecord.from_hash(i, raw) for i, raw in zip(ids, await pipe.execute()) if raw]

    async def update(self, key_id: str, **limits: int | None) -> KeyRecord | None:
        """Change limits (``quota_chars``, ``max_contexts``, ``rate_per_minute``); None = unlimited."""
        if await self.get(key_id) is None:
            return None
        bad = set(limits) - set(LIMIT_FIELDS)
        if bad:
            raise ValueError(f"unknown limits: {sorted(bad)}")
        if limits:
            await self._redis.hset(keys.key_record(key_id),  # type: ignore[misc]
                                  mapping={k: _field(v) for k, v in limits.items()})
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke at once: the key (and every token minted for it) fails its next use; None if unknown."""
        raw = await self._redis.hgetall(keys.key_record(key_id))  # type: ignore[misc]
        if not raw:
            return None
        pipe = self._redis.pipeline(transaction=True)
        if not raw.get(F_REVOKED.encode()):
            pipe.hset(keys.key_record(key_id), F_REVOKED, str(round(time.time(), 3)))
        pipe.delete(keys.client_key(raw.get(b"hash", b"").decode()))
        await pipe.execute()
        return await self.get(key_id)


def _field(v: int | None) -> str:
    return "" if v is None else str(int(v))


def _opt_int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None
