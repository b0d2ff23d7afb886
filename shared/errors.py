"""The error-code tree: every error a client can see has a stable ``code`` from here.

Codes are documented in the README. Each error knows the HTTP status it maps to and
whether it ends the client's WebSocket session (``ws_close``) or only one context.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.retry import decide

# WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry).
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_UNSUPPORTED_DATA = 1003
WS_INVALID_PAYLOAD = 1007
WS_POLICY_VIOLATION = 1008
WS_MESSAGE_TOO_BIG = 1009
WS_INTERNAL_ERROR = 1011
# Application range (4000-4999): close codes that tell a client something 1008 cannot.
WS_UNAUTHORIZED = 4401
WS_SLOW_CONSUMER = 4408


class TTSError(Exception):
    """Base of every typed error; ``code`` is the stable string clients match on."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    # What the flag sent to clients says; derived from the one retry policy (shared/retry.py), never set here.
    retryable: ClassVar[bool] = False
    # None: the error concerns one context and the session stays open.
    ws_close: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.retryable = decide(cls.code, audio_sent=False, attempt=1, asker="client")

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message()
        self.details = details
        super().__init__(self.message)

    @classmethod
    def default_message(cls) -> str:
        """Message used when none is given."""
        return cls.code.replace("_", " ")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form used in error events and HTTP bodies."""
        out: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.details:
            out["details"] = self.details
        return out


# -- client input: the session's framing is broken, so the session ends ------------------------------
class InvalidJSON(TTSError):
    """A text frame was not a JSON object."""

    code = "invalid_json"
    http_status = 400
    ws_close = WS_INVALID_PAYLOAD


class InvalidMessage(TTSError):
    """A message had an unknown type, a missing field or a field of the wrong type."""

    code = "invalid_message"
    http_status = 422
    ws_close = WS_POLICY_VIOLATION


class BinaryNotAccepted(TTSError):
    """Clients send JSON text frames only."""

    code = "binary_not_accepted"
    http_status = 415
    ws_close = WS_UNSUPPORTED_DATA


class MessageTooLarge(TTSError):
    """A client message exceeded the size limit."""

    code = "message_too_large"
    http_status = 413
    ws_close = WS_MESSAGE_TOO_BIG


class UnsupportedMediaType(TTSError):
    """A JSON endpoint got a body without a JSON content type (a cross-site form or text/plain post)."""

    code = "unsupported_media_type"
    http_status = 415


class RequestTimeout(TTSError):
    """The client did not send its request body within the read deadline."""

    code = "request_timeout"
    http_status = 408


# -- client input about one context: answered, session stays open --------------------------------------
class InvalidRequest(TTSError):
    """A well-formed request that cannot be served as asked (bad option value)."""

    code = "invalid_request"
    http_status = 422


class UnsupportedFormat(InvalidRequest):
    """The output format is not one this gateway produces."""

    code = "unsupported_format"


class UnknownVoice(InvalidRequest):
    """No provider of this deployment offers the voice."""

    code = "unknown_voice"
    http_status = 404


class UnknownContext(TTSError):
    """A message named a context that was never started in this session."""

    code = "unknown_context"
    http_status = 404


class ContextClosed(TTSError):
    """A message named a context that already ended (finished, cancelled or failed)."""

    code = "context_closed"
    http_status = 409


class ContextExists(TTSError):
    """A start named a context that is still running."""

    code = "context_exists"
    http_status = 409


class TextTooLong(InvalidRequest):
    """The context's text exceeds the per-context character limit."""

    code = "text_too_long"
    http_status = 413


class TooManyContexts(TTSError):
    """The session already runs its maximum of concurrent contexts."""

    code = "too_many_contexts"
    http_status = 429


# -- auth and limits --------------------------------------------------------------------------------------
class Unauthorized(TTSError):
    """No valid client key or token was presented."""

    code = "unauthorized"
    http_status = 401
    ws_close = WS_UNAUTHORIZED


class Forbidden(TTSError):
    """The key is valid but may not use this resource."""

    code = "forbidden"
    http_status = 403
    ws_close = WS_POLICY_VIOLATION


class RateLimited(TTSError):
    """The key is over its request rate or concurrency limit."""

    code = "rate_limited"
    http_status = 429


class NotFound(TTSError):
    """An admin or account resource (such as a key id) does not exist."""

    code = "not_found"
    http_status = 404


class QuotaExceeded(TTSError):
    """The key has no character quota left for this request."""

    code = "quota_exceeded"
    http_status = 429


# -- the session itself ------------------------------------------------------------------------------------
class SlowConsumer(TTSError):
    """The client stopped reading; its bounded buffer overflowed."""

    code = "slow_consumer"
    ws_close = WS_SLOW_CONSUMER


class ShuttingDown(TTSError):
    """This gateway is draining for a restart; reconnect to another."""

    code = "shutting_down"
    http_status = 503
    ws_close: ClassVar[int | None] = WS_GOING_AWAY


class Draining(ShuttingDown):
    """The same code, about one context: a draining gateway refuses new contexts, keeps the session."""

    ws_close: ClassVar[int | None] = None


class ServiceUnavailable(TTSError):
    """Redis (the queue) is unreachable from the gateway."""

    code = "service_unavailable"
    http_status = 503


# -- the synthesis path --------------------------------------------------------------------------------------
class NoWorkers(TTSError):
    """No worker picked the job up within the start deadline."""

    code = "no_workers"
    http_status = 503


class WorkerLost(TTSError):
    """The worker running the context died (no heartbeat) after audio went out."""

    code = "worker_lost"
    http_status = 502


class JobExpired(TTSError):
    """The job's queue entry expired (``JOB_EXPIRES_S``) before any worker claimed it; nothing was spoken."""

    code = "job_expired"
    http_status = 503


class QueueReset(TTSError):
    """An operator reset the queues; the context's job was removed or aborted."""

    code = "queue_reset"
    http_status = 503


class Timeout(TTSError):
    """No audio arrived within the context's deadline."""

    code = "timeout"
    http_status = 504


class InputTimeout(TTSError):
    """A context sent no text to synthesize within ``UPSTREAM_TEXT_WAIT_S`` of its start."""

    code = "input_timeout"
    http_status = 408


class Overloaded(TTSError):
    """The worker cannot keep one more stream real-time: refused at once rather than slowing every stream."""

    code = "overloaded"
    http_status = 503


class UpstreamError(TTSError):
    """The synthesis provider failed."""

    code = "upstream_error"
    http_status = 502


class UpstreamBusy(UpstreamError):
    """The provider's account-wide concurrency is exhausted and the bounded wait ran out."""

    code = "upstream_busy"
    http_status = 503


class UpstreamTimeout(UpstreamError):
    """The provider stalled: no audio within the per-context deadline."""

    code = "upstream_timeout"
    http_status = 504


class UpstreamDisconnected(UpstreamError):
    """The provider's socket dropped while the context was running."""

    code = "upstream_disconnected"


class UpstreamRejected(UpstreamError):
    """The provider refused the request (bad voice, settings, quota, key)."""

    code = "upstream_rejected"


class ProtocolError(TTSError):
    """A frame on Redis (or from the provider) could not be decoded."""

    code = "protocol_error"


class InternalError(TTSError):
    """Something unexpected failed; the details are in the service's log."""

    code = "internal_error"


def _all_subclasses(cls: type[TTSError]) -> list[type[TTSError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_ALL_ERRORS: list[type[TTSError]] = [TTSError, *_all_subclasses(TTSError)]
ERRORS_BY_CODE: dict[str, type[TTSError]] = {c.code: c for c in _ALL_ERRORS}


def from_code(code: str, message: str | None = None) -> TTSError:
    """Rebuild a typed error from its code (for errors that crossed Redis)."""
    return ERRORS_BY_CODE.get(code, InternalError)(message)
