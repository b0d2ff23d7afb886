"""Phrase cache of whole utterances (see store.py and keying.py)."""

from gateway.cache.keying import digest, normalize
from gateway.cache.store import Chunk, Hit, PhraseCache, Recorder

__all__ = ["Chunk", "Hit", "PhraseCache", "Recorder", "digest", "normalize"]
