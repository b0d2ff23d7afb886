"""Short-lived signed tokens, so browsers open WebSockets without a long-lived key in page JavaScript.

A token is ``tts_tok_<payload>.<signature>``: the payload is base64url JSON ``{"k": key_id, "exp":
unix_seconds}`` and the signature base64url HMAC-SHA256 of the payload under ``TOKEN_SECRET``. It names
the key, not its secret, so revoking the key kills its tokens too (the key record is checked on use).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from shared.errors import Unauthorized

TOKEN_PREFIX = "tts_tok_"


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: which key, until when."""

    key_id: str
    expires_at: float


class TokenSigner:
    """Mints and verifies tokens with one secret (shared by every replica that must accept them)."""

    def __init__(self, secret: str | bytes) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else secret

    @staticmethod
    def random_secret() -> str:
        """A fresh secret for a process that was given none."""
        return secrets.token_urlsafe(32)

    def mint(self, key_id: str, ttl_s: float, now: float | None = None) -> tuple[str, float]:
        """A token for ``key_id`` valid for ``ttl_s``; returns (token, expires_at)."""
        exp = int((time.time() if now is None else now) + ttl_s)
        payload = _b64(json.dumps({"k": key_id, "exp": exp}, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self._sign(payload)}", float(exp)

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The token's claims; Unauthorized when malformed, tampered with or expired."""
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthorized("malformed token")
        payload, sep, signature = token[len(TOKEN_PREFIX):].partition(".")
        if not sep or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise Unauthorized("invalid token signature")
        try:
            claims = json.loads(_unb64(payload))
            key_id, exp = claims["k"], float(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthorized("malformed token") from None
        if not isinstance(key_id, str) or (time.time() if now is None else now) >= exp:
            raise Unauthorized("token expired: request a new one from POST /v1/tokens")
        return TokenClaims(key_id, exp)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
