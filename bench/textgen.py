"""Realistic utterances: a voice agent's mix of short confirmations, medium and long sentences.

Deterministic for a seed, so every target in a run speaks the same texts in the same order.
"""

from __future__ import annotations

import random

SHORT = [
    "Sure.", "Got it.", "One moment, please.", "Yes, that works.", "Thanks for waiting.",
    "Absolutely.", "Let me check.", "Okay, done.", "No problem at all.", "Right away.",
]
MEDIUM = [
    "Your order has shipped and should arrive on Thursday.",
    "I found three flights that leave before noon tomorrow.",
    "The meeting is moved to half past two in room four.",
    "Could you spell the last name for me, please?",
    "Your balance is two hundred and twelve dollars.",
    "I have booked a table for four people at seven.",
    "The weather tomorrow looks dry with a light breeze.",
    "Please hold while I transfer you to billing.",
]
LONG = [
    "Before we continue, I need to confirm a few details about the account, starting with the postcode.",
    "The package left the warehouse this morning and the courier expects to deliver it before six tonight.",
    "I can offer a refund to the original card, or store credit that you can use right away on any order.",
    "Your appointment with the dentist is confirmed for Monday at nine, and a reminder will be sent.",
    "There are two ways to reset the router: hold the button for ten seconds, or use the mobile app.",
]
# Sentence mix for whole utterances: mostly short and medium, like an agent's turns.
_WEIGHTS = ((SHORT, 0.35), (MEDIUM, 0.45), (LONG, 0.20))


def _pick(rng: random.Random) -> str:
    r = rng.random()
    acc = 0.0
    for bucket, w in _WEIGHTS:
        acc += w
        if r <= acc:
            return rng.choice(bucket)
    return rng.choice(MEDIUM)


def utterance(rng: random.Random) -> str:
    """One whole utterance of one or two sentences (≈5–200 characters)."""
    text = _pick(rng)
    if rng.random() < 0.3:
        text = f"{text} {_pick(rng)}"
    return text


def streamed_sentences(rng: random.Random) -> list[str]:
    """Sentences for one LLM-streamed turn: a medium or long first sentence (so the producer stays
    ahead of playback at token pace), then one to three more of any length; each under the
    upstream's 120-character schedule, so audio starts on the client's flush."""
    first = rng.choice(MEDIUM + LONG)
    rest = [_pick(rng) for _ in range(rng.randint(1, 3))]
    return [first, *rest]


def tokens(sentence: str, rng: random.Random) -> list[str]:
    """Split a sentence into LLM-like tokens (a word or word-piece with its leading space)."""
    out: list[str] = []
    words = sentence.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        while len(piece) > 6 and rng.random() < 0.5:
            cut = rng.randint(3, 5)
            out.append(piece[:cut])
            piece = piece[cut:]
        out.append(piece)
    return out
