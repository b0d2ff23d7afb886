"""Build the providers a worker is configured for (``PROVIDERS``), importing each only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings
from worker.providers.base import Provider

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def build_providers(settings: Settings, *, redis: aioredis.Redis | None = None) -> dict[str, Provider]:
    """Instantiate every provider named in ``settings.providers``; ``redis`` makes limits account-wide."""
    providers: dict[str, Provider] = {}
    for name in settings.providers:
        if name == "local":
            from worker.providers.local import LocalProvider

            providers[name] = LocalProvider(threads=settings.local_voice_threads,
                                            max_streams=settings.local_voice_max_streams)
        elif name == "elevenlabs":
            from worker.providers.elevenlabs import ElevenLabsProvider

            providers[name] = ElevenLabsProvider(settings, redis=redis)
    return providers
