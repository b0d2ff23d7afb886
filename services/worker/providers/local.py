"""The local neural voice: Piper's en_US-joe-medium, spoken piece by piece in a bounded pool of threads.

Text arrives like LLM tokens; :class:`~worker.text_split.TextSplitter` releases a piece as soon as a
sentence (or a clause of a long one, or the stream's first clause) is complete, and that piece is
synthesized while the rest of the text is still arriving; pieces of one sentence are joined without
a seam (:meth:`PiperEngine.synthesize`'s ``continues``/``continued``). The model is loaded once per process and shared by every provider
instance; inference runs in threads (it releases the GIL), never on the event loop.

The threads are shared by need (:mod:`worker.providers.local_sched`): the stream whose listener
has the least audio buffered goes first. Capacity is measured, not guessed: at start the engine's
real-time factor on this machine times ``threads``, with ``CAPACITY_HEADROOM`` kept for scheduling
granularity and neighbours (``LOCAL_VOICE_MAX_STREAMS`` overrides it). A context beyond it is
refused at once with ``overloaded`` (retryable), so the streams already playing stay real-time
instead of all degrading together.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared import errors
from shared.audio.encoder import OutputEncoder
from shared.audio.formats import AudioFormat, UnsupportedFormat, parse_format
from shared.metrics import LOCAL_CAPACITY, LOCAL_STREAMS, LOCAL_WAITING, OVERLOADED, UPSTREAM_ERRORS
from worker.providers.base import AudioChunk, ChunkQueue, SynthesisRequest, Voice
from worker.providers.local_sched import DEFAULT_FIRST_PIECE_AHEAD_S, NeedScheduler, Playback
from worker.providers.piper_engine import PiperEngine, SpokenPart, default_paths, get_engine
from worker.text_split import DEFAULT_FIRST_MAX_WORDS, DEFAULT_MAX_WORDS, Piece, TextSplitter

log = structlog.get_logger(__name__)

VOICE_ID = "joe"
MODEL_ID = "piper"  # the only model; any ``model_id`` in a request is accepted and ignored
PROVIDER = "local"
# Share of the measured throughput offered as capacity. bench/local_capacity.py on 2 cores found 12
# streams real-time where real-time factor x threads was 25: encoding, resampling, the event loop and
# two runs sharing caches eat the rest, and pieces are synthesized whole (a slot is held up to ~1 s).
CAPACITY_HEADROOM = 0.5


class LocalProvider:
    """Provider for the local Piper voice ``joe``; ``threads`` bounds concurrent syntheses (``local_voice_threads``).

    ``deterministic`` sets Piper's noise scales to 0, so the same text gives the same bytes.
    ``chunk_ms`` is the audio length of each emitted chunk; ``max_words``/``first_max_words`` bound
    the pieces synthesized at once (the first smaller, for a fast first audio).
    """

    name = PROVIDER
    bills_upstream = False  # usage metering: synthesized here, nothing paid to a provider

    def __init__(
        self,
        threads: int = 2,
        *,
        deterministic: bool = False,
        chunk_ms: int = 160,
        max_words: int = DEFAULT_MAX_WORDS,
        first_max_words: int | None = DEFAULT_FIRST_MAX_WORDS,
        model_path: Path | None = None,
        config_path: Path | None = None,
        max_streams: int = 0,
        first_piece_ahead_s: float = DEFAULT_FIRST_PIECE_AHEAD_S,
    ) -> None:
        """Configure; nothing is loaded until :meth:`start`. ``max_streams`` 0: measured at start."""
        if threads < 1 or chunk_ms < 10 or max_streams < 0:
            raise ValueError("threads must be >= 1, chunk_ms >= 10 and max_streams >= 0")
        self.threads = threads
        self.deterministic = deterministic
        self.chunk_ms = chunk_ms
        self.max_words = max_words
        self.first_max_words = first_max_words
        if model_path is None or config_path is None:
            model_path, config_path = default_paths()
        self._paths = (model_path, config_path)
        self.sample_rate: int = json.loads(config_path.read_text(encoding="utf-8"))["audio"]["sample_rate"]
        self._engine: PiperEngine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._start_lock = asyncio.Lock()
        self._streams: set[LocalStream] = set()
        self.max_streams = max_streams
        self.capacity: int = max_streams or 0  # set at start when measured
        self.realtime_factor: float | None = None
        self.scheduler = NeedScheduler(threads, first_piece_ahead_s)

    async def start(self) -> None:
        """Load the model in a thread (seconds, once per process; later providers share it)."""
        async with self._start_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="piper")
            if self._engine is None:
                loop = asyncio.get_running_loop()
                self._engine = await loop.run_in_executor(
                    self._executor, get_engine, *self._paths, self.threads
                )
                if not self.max_streams:
                    self.realtime_factor = await loop.run_in_executor(self._executor,
                                                                      self._engine.realtime_factor)
                    self.capacity = max(1, math.floor(self.realtime_factor * self.threads * CAPACITY_HEADROOM))
                LOCAL_CAPACITY.set(self.capacity)
                log.info(
                    "local_voice_ready",
                    load_seconds=round(self._engine.load_seconds, 2),
                    threads=self.threads,
                    alignments=self._engine.alignments,
                    realtime_factor=None if self.realtime_factor is None else round(self.realtime_factor, 2),
                    capacity_streams=self.capacity,
                )

    async def close(self) -> None:
        """End every open stream with ``upstream_error`` and stop the threads; the model stays cached."""
        streams = list(self._streams)
        for stream in streams:
            stream.fail(errors.UpstreamError("local voice provider closed"))
        await asyncio.gather(*(s.wait_closed() for s in streams))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def open_stream(self, request: SynthesisRequest) -> LocalStream:
        """Begin a context; raises UnknownVoice, UnsupportedFormat or InvalidRequest (speed)."""
        if request.voice_id != VOICE_ID:
            raise errors.UnknownVoice(f"voice {request.voice_id!r} is not offered by the local provider")
        try:
            fmt = parse_format(request.output_format)
        except UnsupportedFormat as e:
            raise errors.UnsupportedFormat(str(e)) from e
        speed = request.voice_settings.get("speed", request.options.get("speed", 1.0))
        if not isinstance(speed, int | float) or not 0.5 <= speed <= 2.0:
            raise errors.InvalidRequest("speed must be a number from 0.5 to 2.0")
        await self.start()
        assert self._engine is not None and self._executor is not None
        if len(self._streams) >= self.capacity:
            OVERLOADED.labels(PROVIDER).inc()
            raise errors.Overloaded(f"this worker keeps {self.capacity} local-voice streams real-time and all "
                                    "are in use; retry shortly")
        stream = LocalStream(self, self._engine, self._executor, fmt, float(speed))
        self._streams.add(stream)
        LOCAL_STREAMS.set(len(self._streams))
        return stream

    def voices(self) -> list[Voice]:
        """The one local voice."""
        return [
            Voice(
                voice_id=VOICE_ID,
                name="Joe (en_US, local Piper)",
                provider=PROVIDER,
                language="en",
                description="Piper en_US-joe-medium, synthesized on the worker's CPU",
                default_model=MODEL_ID,
                sample_rate=self.sample_rate,
                labels={"accent": "american", "engine": "piper", "quality": "medium"},
            )
        ]

    def status(self) -> dict[str, Any]:
        """Model loaded, load time, threads and open streams."""
        engine = self._engine
        return {
            "provider": PROVIDER,
            "model": MODEL_ID,
            "model_loaded": engine is not None,
            "load_seconds": round(engine.load_seconds, 3) if engine else None,
            "alignments": "phoneme" if engine and engine.alignments else "proportional",
            "threads": self.threads,
            "active_streams": len(self._streams),
            "capacity_streams": self.capacity,
            "realtime_factor": None if self.realtime_factor is None else round(self.realtime_factor, 2),
            "waiting_streams": self.scheduler.waiting,
            "saturated": engine is not None and len(self._streams) >= self.capacity,
            "sample_rate": self.sample_rate,
        }

    def _discard(self, stream: LocalStream) -> None:
        self._streams.discard(stream)
        LOCAL_STREAMS.set(len(self._streams))


class LocalStream:
    """One context: pieces of text are synthesized in order, each in a pool thread, as they complete.

    Alignment: per-character times derived from Piper's per-phoneme durations when the ``onnx``
    package is installed, else spread proportionally over each sentence (see
    :meth:`PiperEngine.synthesize`; ``status()["alignments"]`` says which), relative to each chunk's
    start and measured on the source audio before resampling (the resampler's few-millisecond delay
    is not subtracted).
    """

    def __init__(
        self,
        provider: LocalProvider,
        engine: PiperEngine,
        executor: ThreadPoolExecutor,
        fmt: AudioFormat,
        speed: float,
    ) -> None:
        self._provider = provider
        self._engine = engine
        self._executor = executor
        self._speed = speed
        self._encoder = OutputEncoder(engine.sample_rate, fmt)
        self._slice = max(1, engine.sample_rate * provider.chunk_ms // 1000)
        self._splitter = TextSplitter(provider.max_words, provider.first_max_words)
        self._pieces: asyncio.Queue[Piece | None] = asyncio.Queue()
        self._chunks = ChunkQueue()
        self._stop = threading.Event()  # read by the synthesis thread between pieces of audio
        self._ended = False
        self._spoken = 0  # pieces handed to the engine; touched only by the (one at a time) pool thread
        self.playback = Playback()  # how far ahead of its listener this stream is (for the scheduler)
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="local-voice-stream")
        # A callback, not a finally: a task cancelled before its first step never runs its body.
        self._task.add_done_callback(lambda _: provider._discard(self))

    async def send_text(self, text: str, flush: bool = False) -> None:
        """Queue the pieces this text completes; ``flush`` releases everything buffered."""
        if self._stop.is_set():
            return  # cancelled: late text is dropped, as its audio would be
        if self._ended:
            raise errors.ContextClosed("text after end of input")
        pieces = self._splitter.feed(text)
        if flush:
            pieces += self._splitter.flush()
        for piece in pieces:
            self._pieces.put_nowait(piece)

    async def end_input(self) -> None:
        """Synthesize the rest, then finish (idempotent)."""
        if self._ended or self._stop.is_set():
            return
        self._ended = True
        for piece in self._splitter.flush():
            self._pieces.put_nowait(piece)
        self._pieces.put_nowait(None)

    async def cancel(self) -> None:
        """Stop now: queued audio is dropped and the thread stops at its next slice (idempotent)."""
        self._stop.set()
        self._chunks.abort()
        self._task.cancel()
        await asyncio.wait([self._task])

    def fail(self, error: errors.TTSError) -> None:
        """End the stream with ``error`` after what is already queued (provider shutdown)."""
        self._stop.set()
        self._chunks.fail(error)
        self._task.cancel()

    async def wait_closed(self) -> None:
        """Return once the stream's task has ended (finished, failed or cancelled)."""
        await asyncio.wait([self._task])

    def __aiter__(self) -> ChunkQueue:
        return self._chunks

    async def _run(self) -> None:
        carry: list[tuple[str, int, int]] = []  # chars whose audio the encoder has not released yet
        pending = [0]  # samples fed to the encoder since the last chunk went out
        scheduler = self._provider.scheduler
        try:
            while (piece := await self._pieces.get()) is not None:
                async with scheduler.turn(self.playback):
                    LOCAL_WAITING.set(scheduler.waiting)
                    await self._loop.run_in_executor(self._executor, self._speak, piece, carry, pending)
            tail = self._encoder.finish()
            if tail or carry:
                self._emit(tail, carry, pending[0])
            self._chunks.finish()
        except Exception as e:
            UPSTREAM_ERRORS.labels(PROVIDER, "synthesis").inc()
            log.exception("local_voice_failed")
            error = errors.UpstreamError("local voice synthesis failed")
            error.__cause__ = e
            self._chunks.fail(error)

    def _speak(self, piece: Piece, carry: list[tuple[str, int, int]], pending: list[int]) -> None:
        """Synthesize one piece and hand its audio to the loop slice by slice (runs in a pool thread)."""
        if self._stop.is_set():
            return
        if self._spoken:
            carry.append((" ", 0, 0))  # the space between this piece and the last
        self._spoken += 1
        parts = self._engine.synthesize(
            piece, deterministic=self._provider.deterministic, speed=self._speed, cancelled=self._stop.is_set,
            continues=piece.continues, continued=piece.continued,
        )
        for part in parts:
            if not len(part.pcm):
                carry.extend((c, 0, 0) for c in part.chars)
            for a in range(0, len(part.pcm), self._slice):
                if self._stop.is_set():
                    return
                b = min(a + self._slice, len(part.pcm))
                last = b == len(part.pcm)
                carry.extend(_chars_in(part, a, b, last))
                audio = self._encoder.feed(part.pcm[a:b].tobytes())
                pending[0] += b - a
                if audio:
                    try:
                        self._loop.call_soon_threadsafe(self._emit, audio, list(carry), pending[0])
                    except RuntimeError:  # the loop is gone (process shutting down): nobody listens
                        return
                    carry.clear()
                    pending[0] = 0
                else:  # held back by the encoder: these chars belong to the next chunk, at its start
                    carry[:] = [(c, start - (b - a), dur) for c, start, dur in carry]

    def _emit(self, audio: bytes, chars: list[tuple[str, int, int]], samples: int) -> None:
        """Queue one chunk of ``samples`` source samples (on the loop); dropped if the stream was cancelled."""
        if self._chunks.closed:
            return
        self.playback.add(samples / self._engine.sample_rate)
        alignment = None
        if chars:
            ms = 1000 / self._engine.sample_rate
            alignment = {
                "chars": [c for c, _, _ in chars],
                "charStartTimesMs": [max(0, round(start * ms)) for _, start, _ in chars],
                "charDurationsMs": [round(dur * ms) for _, _, dur in chars],
            }
        self._chunks.put(AudioChunk(audio, alignment))


def _chars_in(part: SpokenPart, a: int, b: int, last: bool) -> list[tuple[str, int, int]]:
    """(char, start relative to sample ``a``, duration) for the chars starting in samples [a, b)."""
    mask = (part.starts >= a) & ((part.starts < b) | last)
    idx = np.nonzero(mask)[0]
    return [(part.chars[i], int(part.starts[i]) - a, int(part.ends[i] - part.starts[i])) for i in idx]
