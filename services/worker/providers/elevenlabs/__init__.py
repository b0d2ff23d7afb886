"""ElevenLabs provider: pooled ``multi-stream-input`` sockets shared by every job on a worker."""

from .provider import ElevenLabsProvider

__all__ = ["ElevenLabsProvider"]
