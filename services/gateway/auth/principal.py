"""Who is calling: the identity and limits every endpoint receives from ``authenticate``."""

from __future__ import annotations

from dataclasses import dataclass

# The anonymous caller of a gateway running with AUTH_DISABLED=true.
DEV_KEY_ID = "dev"


@dataclass(frozen=True)
class Principal:
    """An authenticated client key (or the dev-mode anonymous caller); ``None`` limits mean unlimited."""

    key_id: str
    name: str
    max_contexts: int | None = None
    rate_per_minute: int | None = None
    quota_chars: int | None = None
    # How the caller proved itself: "key" (xi-api-key / Bearer), "token" (signed ?token=), "dev".
    via: str = "key"


DEV_PRINCIPAL = Principal(key_id=DEV_KEY_ID, name="dev", via="dev")
