"""Phrase cache of whole utterances (see store.py and keying.py)."""

from gateway.cache.keying import digest, normalize
from gateway.cache.store import Chunk, PhraseCache, Recorder

__all__ = ["Chunk", "PhraseCache", "Recorder", "digest", "normalize"]
