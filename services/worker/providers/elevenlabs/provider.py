"""The ElevenLabs :class:`~worker.providers.base.Provider`: validates requests, places them in the pool.

The API key travels only in the ``xi-api-key`` header (never in a URL or a log line). Given the
worker's Redis client, the plan's concurrency limit holds account-wide across workers
(:mod:`worker.upstream_permits`); without one, per process.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import redis.asyncio as aioredis

from shared.logging import get_logger
from shared.settings import Settings
from worker.providers.base import Provider, SynthesisRequest, SynthesisStream, Voice
from worker.upstream_permits import AccountLimit, account_id

from .context import UpstreamContext
from .options import build_spec
from .pool import SocketPool

log = get_logger(__name__)

_VOICES_TIMEOUT_S = 5.0


def _ws_base(http_base: str) -> str:
    if http_base.startswith("https://"):
        return "wss://" + http_base[len("https://"):]
    if http_base.startswith("http://"):
        return "ws://" + http_base[len("http://"):]
    return http_base


class ElevenLabsProvider:
    """ElevenLabs over a pool of multi-context WebSockets (one context per job attempt)."""

    name = "elevenlabs"

    def __init__(self, settings: Settings, *, base_url: str | None = None, api_key: str | None = None,
                 redis: aioredis.Redis | None = None) -> None:
        """``base_url``/``api_key`` override the settings (tests point them at the emulator); ``redis``
        makes ``UPSTREAM_CONCURRENCY`` account-wide (None: per process)."""
        self.settings = settings
        base = (base_url or settings.elevenlabs_base_url).rstrip("/")
        self._http_base = base.removesuffix("/v1")
        self._api_key = api_key if api_key is not None else settings.elevenlabs_api_key
        headers = {"xi-api-key": self._api_key} if self._api_key else {}
        self._headers = headers
        account = None
        if redis is not None:
            account = AccountLimit(redis, account=account_id(self.name, self._http_base, self._api_key),
                                   limit=settings.upstream_concurrency, lease_s=settings.upstream_lease_s,
                                   provider=self.name, credit=settings.upstream_permit_credit)
        self.pool = SocketPool(settings, ws_base=_ws_base(self._http_base), headers=headers, provider=self.name,
                               account=account)
        self._session: aiohttp.ClientSession | None = None
        self._names: dict[str, Voice] = {}
        self._fallback_owned: Provider | None = None  # a local voice started and closed with this provider

    def use_fallback(self, local: Provider, *, owned: bool) -> None:
        """``FAILOVER_LOCAL_VOICE``: ``local`` speaks the rest of a failing-over context that finds no
        socket within its deadline; ``owned``: this provider starts and closes it (not a listed provider)."""
        self.pool.fallback = local
        self._fallback_owned = local if owned else None

    async def start(self) -> None:
        """Prewarm the pool; list the account's voices when a key is set (a failure only logs)."""
        # No connector limit: aiohttp's default (100 connections) silently capped the pool at 100
        # upstream sockets, so socket 101 and on hung in connect until its timeout and their contexts
        # waited ~10 s (a 1,000-stream run: TTFA p90 12.7 s). The pool bounds sockets itself
        # (POOL_MAX_SOCKETS); the HTTP calls beside them are a voice listing at start.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if self._fallback_owned is not None:
            await self._fallback_owned.start()  # loaded now: a failover must not wait seconds for the model
        await self.pool.start(self._session)
        if self._api_key:
            await self._fetch_voices()

    async def close(self) -> None:
        """Fail in-flight streams and close every socket and the HTTP session."""
        await self.pool.close()
        if self._fallback_owned is not None:
            await self._fallback_owned.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open_stream(self, request: SynthesisRequest) -> SynthesisStream:
        """Validate ``request`` and open its context; a permit and a slot are taken at its first text
        (a refusal, such as ``upstream_busy``, then ends the stream's iteration)."""
        spec = build_spec(request.voice_id, request.model_id, request.output_format, request.voice_settings,
                          request.options, self.settings)
        ctx = UpstreamContext(request.key, spec, self.pool, self.settings.upstream_first_audio_timeout_s,
                              tenant=request.tenant, max_failovers=self.settings.failover_max_per_context,
                              failover_text_bytes=self.settings.failover_text_bytes)
        self.pool.open(ctx)  # no permit yet: the first non-blank text asks for one
        return ctx

    def voices(self) -> list[Voice]:
        """The configured voice ids (named from the account's list when it was fetched)."""
        ids = list(self.settings.elevenlabs_voices)
        if not ids:
            ids = list(self._names)
        if self.settings.default_voice and self.settings.default_voice not in ids:
            ids.insert(0, self.settings.default_voice)
        model = self.settings.elevenlabs_model
        return [self._names.get(v) or Voice(v, v, self.name, default_model=model) for v in ids]

    def status(self) -> dict[str, Any]:
        """Pool state (sockets by state, live and waiting contexts, limits)."""
        return {"provider": self.name, "voices": len(self.voices()), **self.pool.status()}

    async def _fetch_voices(self) -> None:
        assert self._session is not None
        try:
            async with self._session.get(f"{self._http_base}/v1/voices", headers=self._headers,
                                         timeout=aiohttp.ClientTimeout(total=_VOICES_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    log.warning("elevenlabs_voices_unavailable", status=resp.status)
                    return
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("elevenlabs_voices_unavailable", error=type(e).__name__)
            return
        model = self.settings.elevenlabs_model
        for item in body.get("voices", []) if isinstance(body, dict) else []:
            if not isinstance(item, dict) or not isinstance(item.get("voice_id"), str):
                continue
            raw_labels = item.get("labels")
            labels: dict[str, Any] = raw_labels if isinstance(raw_labels, dict) else {}
            self._names[item["voice_id"]] = Voice(
                voice_id=item["voice_id"], name=str(item.get("name") or item["voice_id"]), provider=self.name,
                language=str(labels.get("language") or "en"), description=str(item.get("description") or ""),
                default_model=model, labels={str(k): str(v) for k, v in labels.items()})
        log.info("elevenlabs_voices_listed", count=len(self._names))
