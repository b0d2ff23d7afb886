"""Settings read once from the environment; a missing or malformed value fails fast, naming the variable."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable is malformed; the message names it."""


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):  # "inf" passed every range check, then overflowed where it was used
        raise ValueError(f"expected a finite number, got {raw!r}")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


_PARSERS: dict[type, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: _parse_float,
    bool: _parse_bool,
    tuple: _parse_list,
}


def env_field(env: str, default: Any, *, secret: bool = False, check: Callable[[Any], bool] | None = None,
              hint: str = "") -> Any:
    """A settings field read from ``env``; ``check`` rejects out-of-range values."""
    return field(default=default, repr=not secret,
                 metadata={"env": env, "check": check, "hint": hint, "secret": secret})


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


@dataclass(frozen=True)
class Settings:
    """Every knob of gateway, worker and run command; see the README's table of variables."""

    redis_url: str = env_field("REDIS_URL", "redis://127.0.0.1:6379/0")
    queue_name: str = env_field("QUEUE_NAME", "tts:queue")

    # gateway
    # Unset with AUTH_DISABLED, the gateway binds loopback: a keyless gateway serves this machine only.
    gateway_host: str = env_field("GATEWAY_HOST", "0.0.0.0")
    gateway_port: int = env_field("GATEWAY_PORT", 8080, check=lambda p: 0 <= p < 65536)
    admin_token: str | None = env_field("ADMIN_TOKEN", None, secret=True)
    # Dev mode serves clients without keys: only for the embedded `make run`; logged loudly when on.
    auth_disabled: bool = env_field("AUTH_DISABLED", False)
    token_secret: str | None = env_field("TOKEN_SECRET", None, secret=True)
    token_ttl_s: float = env_field("TOKEN_TTL_S", 300.0, check=_positive)
    # Limits of keys created without explicit ones; a key's quota is characters per UTC day.
    default_key_quota_chars: int | None = env_field("DEFAULT_KEY_QUOTA_CHARS", 1_000_000, check=_non_negative)
    default_key_max_contexts: int | None = env_field("DEFAULT_KEY_MAX_CONTEXTS", 20, check=_positive)
    default_key_rate_per_minute: int | None = env_field("DEFAULT_KEY_RATE_PER_MINUTE", 600, check=_positive)
    # A key's concurrent-context slot is a lease refreshed while the context lives, so a crashed
    # gateway's slots free themselves after this long.
    context_lease_s: float = env_field("CONTEXT_LEASE_S", 30.0, check=lambda v: v >= 3)
    # Phrase cache of whole utterances.
    cache_enabled: bool = env_field("CACHE_ENABLED", True)
    cache_ttl_s: float = env_field("CACHE_TTL_S", 86400.0, check=_positive)
    cache_max_bytes: int = env_field("CACHE_MAX_BYTES", 256 << 20, check=_positive)
    cache_max_entry_bytes: int = env_field("CACHE_MAX_ENTRY_BYTES", 4 << 20, check=_positive)
    # Off, every tenant's cached phrases are its own: a shared entry answers another tenant in ~1 ms, which
    # tells it that someone said exactly that sentence recently (a timing oracle across tenants).
    cache_share_across_tenants: bool = env_field("CACHE_SHARE_ACROSS_TENANTS", False)
    # Per-key usage as Prometheus series on /metrics/tenants: one series per key and counter, so it is
    # off unless the operator accepts that cardinality, and bounded to the day's most active keys.
    metrics_per_tenant: bool = env_field("METRICS_PER_TENANT", False)
    metrics_tenants_top: int = env_field("METRICS_TENANTS_TOP", 50, check=lambda v: 1 <= v <= 1000)
    allowed_origins: tuple[str, ...] = env_field("ALLOWED_ORIGINS", (), hint="comma-separated origins or *")
    session_queue_frames: int = env_field("SESSION_QUEUE_FRAMES", 512, check=_positive)
    # Memory is the cost of a client that stopped reading: bound the bytes, not only the frames.
    session_queue_bytes: int = env_field("SESSION_QUEUE_BYTES", 2 << 20, check=_positive)
    # Read deadlines: request line + headers (also the idle keep-alive time), and a request's whole body.
    header_read_timeout_s: float = env_field("HEADER_READ_TIMEOUT_S", 15.0, check=_positive)
    body_read_timeout_s: float = env_field("BODY_READ_TIMEOUT_S", 10.0, check=_positive)
    max_message_bytes: int = env_field("MAX_MESSAGE_BYTES", 65536, check=_positive)
    max_context_chars: int = env_field("MAX_CONTEXT_CHARS", 40000, check=_positive)
    max_contexts_per_session: int = env_field("MAX_CONTEXTS_PER_SESSION", 16, check=_positive)
    job_start_timeout_s: float = env_field("JOB_START_TIMEOUT_S", 10.0, check=_positive)
    job_expires_s: float = env_field("JOB_EXPIRES_S", 120.0, check=_positive)
    first_audio_timeout_s: float = env_field("FIRST_AUDIO_TIMEOUT_S", 15.0, check=_positive)
    inter_chunk_timeout_s: float = env_field("INTER_CHUNK_TIMEOUT_S", 15.0, check=_positive)
    drain_grace_s: float = env_field("DRAIN_GRACE_S", 20.0, check=_non_negative)
    max_retries: int = env_field("MAX_RETRIES", 1, check=_non_negative)

    # worker
    worker_id: str | None = env_field("WORKER_ID", None)
    # Loopback unless asked: the port serves /metrics without a key. Container images set 0.0.0.0.
    worker_metrics_host: str = env_field("WORKER_METRICS_HOST", "127.0.0.1")
    worker_metrics_port: int = env_field("WORKER_METRICS_PORT", 9100, check=lambda p: 0 <= p < 65536)
    worker_max_jobs: int = env_field("WORKER_MAX_JOBS", 200, check=_positive)
    worker_poll_s: float = env_field("WORKER_POLL_S", 0.5, check=_positive)
    heartbeat_interval_s: float = env_field("HEARTBEAT_INTERVAL_S", 0.4, check=_positive)
    heartbeat_ttl_s: float = env_field("HEARTBEAT_TTL_S", 1.5, check=_positive)
    # A worker whose event loop is busy stays alive to gateways (a thread extends its heartbeat) for at
    # most this long without a beat from the loop; hung longer, its contexts move (worker/liveness.py).
    heartbeat_stall_limit_s: float = env_field("HEARTBEAT_STALL_LIMIT_S", 10.0, check=_positive)
    providers: tuple[str, ...] = env_field("PROVIDERS", ("local",), hint="comma-separated: local, elevenlabs")
    default_voice: str = env_field("DEFAULT_VOICE", "")

    # ElevenLabs provider and its pool
    elevenlabs_api_key: str | None = env_field("ELEVENLABS_API_KEY", None, secret=True)
    elevenlabs_base_url: str = env_field("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io")
    elevenlabs_model: str = env_field("ELEVENLABS_MODEL", "eleven_flash_v2_5")
    elevenlabs_voices: tuple[str, ...] = env_field("ELEVENLABS_VOICES", (),
                                                   hint="comma-separated voice ids to offer")
    pool_min_sockets: int = env_field("POOL_MIN_SOCKETS", 1, check=_non_negative)
    pool_max_sockets: int = env_field("POOL_MAX_SOCKETS", 16, check=_positive)
    pool_contexts_per_socket: int = env_field("POOL_CONTEXTS_PER_SOCKET", 5, check=lambda v: 1 <= v <= 5)
    pool_max_socket_age_s: float = env_field("POOL_MAX_SOCKET_AGE_S", 900.0, check=_positive)
    pool_keepalive_s: float = env_field("POOL_KEEPALIVE_S", 10.0, check=_positive)
    # New upstream handshakes per second per pool (and how many at once): a cold pool's burst must
    # not be a handshake storm the provider's edge refuses (services/worker/providers/elevenlabs/dialer.py).
    pool_handshake_rate: float = env_field("POOL_HANDSHAKE_RATE", 50.0, check=_positive)
    pool_handshake_burst: int = env_field("POOL_HANDSHAKE_BURST", 25, check=_positive)
    # Growth ahead of demand (services/worker/providers/elevenlabs/demand.py): each key keeps sockets for
    # its recent peak (remembered POOL_DEMAND_WINDOW_S) or its live count plus the rising trend over
    # POOL_GROWTH_LOOKAHEAD_S, whichever is more, plus spare slots: POOL_SPARE_FRACTION of that peak, at
    # least POOL_SPARE_SLOTS. Off: a key's next socket opens only as its last free slot is taken.
    pool_pregrow: bool = env_field("POOL_PREGROW", True)
    pool_spare_slots: int = env_field("POOL_SPARE_SLOTS", 1, check=_non_negative)
    pool_spare_fraction: float = env_field("POOL_SPARE_FRACTION", 0.2, check=lambda v: 0 <= v <= 10)
    pool_demand_window_s: float = env_field("POOL_DEMAND_WINDOW_S", 300.0, check=_positive)
    pool_growth_lookahead_s: float = env_field("POOL_GROWTH_LOOKAHEAD_S", 1.0, check=_positive)
    upstream_concurrency: int = env_field("UPSTREAM_CONCURRENCY", 10, check=_positive)
    upstream_slot_wait_s: float = env_field("UPSTREAM_SLOT_WAIT_S", 5.0, check=_non_negative)
    # Account-wide permits are leases in Redis refreshed while their contexts live: a crashed worker's
    # permits come back after this long.
    upstream_lease_s: float = env_field("UPSTREAM_LEASE_S", 5.0, check=lambda v: v >= 0.5)
    # A permit taken before Redis answers while the account has permits to spare (one round trip less
    # to first audio); false: every permit waits for Redis' grant.
    upstream_permit_credit: bool = env_field("UPSTREAM_PERMIT_CREDIT", True)
    upstream_first_audio_timeout_s: float = env_field("UPSTREAM_FIRST_AUDIO_TIMEOUT_S", 8.0, check=_positive)
    upstream_inactivity_timeout_s: int = env_field("UPSTREAM_INACTIVITY_TIMEOUT_S", 180,
                                                   check=lambda v: 1 <= v <= 180)
    # A context takes an upstream permit only at its first non-blank text; one that never sends any
    # ends with ``input_timeout`` after this long (the default: the longest idle ElevenLabs allows).
    upstream_text_wait_s: float = env_field("UPSTREAM_TEXT_WAIT_S", 180.0, check=_positive)
    # A placed context quiet this long (no text sent, no audio received) gives its permit back until
    # it has something to synthesize again (ElevenLabs counts generating time, not open contexts).
    upstream_idle_release_s: float = env_field("UPSTREAM_IDLE_RELEASE_S", 2.0, check=_positive)
    # Failover: a context whose socket fails after audio went out resumes on another socket from the
    # first word its listener did not hear, at most this many times (0: it fails, as before).
    failover_max_per_context: int = env_field("FAILOVER_MAX_PER_CONTEXT", 2, check=lambda v: 0 <= v <= 10)
    # Unspoken text a context keeps for a failover; a context further ahead of its audio cannot resume.
    failover_text_bytes: int = env_field("FAILOVER_TEXT_BYTES", 65536, check=lambda v: 1024 <= v <= 16 * 2**20)
    # When no upstream socket can be opened within a failing-over context's deadline, the local voice
    # speaks the rest of it (a different voice: off unless an operator allows it).
    failover_local_voice: bool = env_field("FAILOVER_LOCAL_VOICE", False)

    # local voice
    local_voice_threads: int = env_field("LOCAL_VOICE_THREADS", 2, check=_positive)
    # Concurrent local-voice streams a worker accepts before refusing with ``overloaded``; 0 = measured at
    # start (the engine's real-time factor on this machine x threads, with headroom).
    local_voice_max_streams: int = env_field("LOCAL_VOICE_MAX_STREAMS", 0, check=_non_negative)

    # ElevenLabs/OpenAI-compatible endpoints: unlike ElevenLabs (5, then the socket dies) a client socket
    # may run this many contexts; the next one alone gets an error frame.
    compat_max_contexts_per_socket: int = env_field("COMPAT_MAX_CONTEXTS_PER_SOCKET", 32, check=_positive)
    # OpenAI voice names (alloy ... cedar) -> catalogue voices; a name not listed means DEFAULT_VOICE.
    openai_voices: tuple[str, ...] = env_field(
        "OPENAI_VOICES", (), check=lambda v: all(item.count("=") == 1 and all(item.split("=")) for item in v),
        hint="comma-separated name=voice_id, e.g. alloy=joe,nova=21m00Tcm4TlvDq8ikWAM")

    # Absolute deadline for a compatible socket's key (first message): heartbeats do not extend it.
    ws_auth_timeout_s: float = env_field("WS_AUTH_TIMEOUT_S", 10.0, check=_positive)
    # Open sessions of a revoked key are closed within this many seconds (gateway/revocation.py).
    revocation_check_s: float = env_field("REVOCATION_CHECK_S", 2.0, check=_positive)
    # TLS on the gateway's own port (the ElevenLabs SDK's WebSocket helper always dials wss://).
    tls_cert_file: str | None = env_field("TLS_CERT_FILE", None, hint="PEM certificate chain")
    tls_key_file: str | None = env_field("TLS_KEY_FILE", None, hint="PEM private key")

    # logging
    log_level: str = env_field("LOG_LEVEL", "info")
    log_format: str = env_field("LOG_FORMAT", "auto", check=lambda v: v in ("auto", "json", "console"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``environ`` (default ``os.environ``); ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides:
                continue
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or (raw == "" and f.default is None):
                continue
            values[f.name] = _parse(f, name, raw)
        values.update(overrides)
        if "gateway_host" not in values and values.get("auth_disabled"):
            values["gateway_host"] = "127.0.0.1"
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        for f in fields(self):
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is not None and value is not None and not check(value):
                raise SettingsError(f"{f.metadata['env']}: value {value!r} is out of range")
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise SettingsError("HEARTBEAT_TTL_S must be larger than HEARTBEAT_INTERVAL_S")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if self.pool_min_sockets > self.pool_max_sockets:
            raise SettingsError("POOL_MIN_SOCKETS must not exceed POOL_MAX_SOCKETS")
        for name in ("admin_token", "token_secret"):
            _check_secret(name.upper(), getattr(self, name))
        for p in self.providers:
            if p not in ("local", "elevenlabs"):
                raise SettingsError(f"PROVIDERS: unknown provider {p!r} (known: local, elevenlabs)")

    def secrets(self) -> list[str]:
        """Every secret value set, so log and response scrubbers can search for them.

        Includes the password of ``REDIS_URL`` (``redis://:PASSWORD@host`` / ``rediss://user:PASSWORD@host``).
        """
        found = [v for f in fields(self) if f.metadata.get("secret") and (v := getattr(self, f.name))]
        password = urlsplit(self.redis_url).password
        return [*found, password] if password else found


# A guessable admin token opens every key; a guessable token secret mints tokens for any key.
MIN_SECRET_CHARS = 16
MIN_SECRET_DISTINCT = 8


def _check_secret(env: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) < MIN_SECRET_CHARS or len(set(value)) < MIN_SECRET_DISTINCT:
        raise SettingsError(f"{env} is too weak: use at least {MIN_SECRET_CHARS} characters with at least "
                            f"{MIN_SECRET_DISTINCT} different ones (e.g. `openssl rand -hex 32`), or leave it unset")


def _parse(f: Any, name: str, raw: str) -> Any:
    typ = f.type if isinstance(f.type, type) else _type_from_annotation(str(f.type))
    parser = _PARSERS[typ]
    try:
        return parser(raw)
    except (TypeError, ValueError) as e:
        hint = f" ({f.metadata['hint']})" if f.metadata.get("hint") else ""
        raise SettingsError(f"{name}: cannot parse {raw!r} as {typ.__name__}{hint}: {e}") from e


def _type_from_annotation(ann: str) -> type:
    head = ann.split("|")[0].strip()
    if head.startswith("tuple"):
        return tuple
    return {"str": str, "int": int, "float": float, "bool": bool}[head]
