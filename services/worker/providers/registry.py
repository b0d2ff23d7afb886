"""Build the providers a worker is configured for (``PROVIDERS``), importing each only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings, SettingsError
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
    el = providers.get("elevenlabs")
    if settings.failover_local_voice and el is not None:
        _check_local_voice()
        from worker.providers.elevenlabs import ElevenLabsProvider
        from worker.providers.local import LocalProvider

        assert isinstance(el, ElevenLabsProvider)
        local = providers.get("local")
        el.use_fallback(local if isinstance(local, LocalProvider) else LocalProvider(
            threads=settings.local_voice_threads, max_streams=settings.local_voice_max_streams), owned=local is None)
    return providers


def _check_local_voice() -> None:
    """Refuse ``FAILOVER_LOCAL_VOICE`` at start when the local voice cannot speak (nothing fails later)."""
    try:
        import piper  # noqa: F401

        from worker.providers.piper_engine import default_paths

        missing = [str(p) for p in default_paths() if not p.is_file()]
    except ImportError as e:
        raise SettingsError(f"FAILOVER_LOCAL_VOICE is on but the local voice is not installed ({e.name} is "
                            "missing): install the `local` extra or turn FAILOVER_LOCAL_VOICE off") from e
    if missing:
        raise SettingsError(f"FAILOVER_LOCAL_VOICE is on but the local voice's model files are missing: {missing}")
