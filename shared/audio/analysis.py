"""Decode and measure audio in any supported format: the yardstick tests across the project use."""

from __future__ import annotations

import struct

import numpy as np

from shared.audio.formats import PCM_SAMPLE_WIDTH, AudioFormat
from shared.audio.g711 import alaw_decode, ulaw_decode
from shared.audio.wav import UNKNOWN_SIZE

_FULL_SCALE = 32768.0


def decode_to_pcm16(data: bytes, fmt: AudioFormat) -> tuple[bytes, int]:
    """Decode a whole stream in ``fmt`` to PCM16 mono; return (pcm16 bytes, sample rate)."""
    if fmt.codec == "pcm":
        return bytes(data[: len(data) - len(data) % 2]), fmt.sample_rate
    if fmt.codec == "ulaw":
        return ulaw_decode(data), fmt.sample_rate
    if fmt.codec == "alaw":
        return alaw_decode(data), fmt.sample_rate
    if fmt.codec == "wav":
        return decode_wav(data)
    if fmt.codec in ("opus", "aac", "flac"):
        return decode_av(data, fmt.codec)
    return decode_mp3(data)


_DEMUXERS = {"opus": "ogg", "aac": "aac", "flac": "flac"}


def decode_av(data: bytes, codec: str) -> tuple[bytes, int]:
    """Decode Ogg Opus, ADTS AAC or FLAC with FFmpeg (PyAV) to PCM16 mono at the stream's rate.

    FFmpeg's decoders are independent of the encoders under test: a stream they read back as the
    expected samples is a stream any FFmpeg-based player (browsers, ffplay, mpv) reads.
    """
    import io

    import av

    out: list[np.ndarray] = []
    rate = 0
    if len(data) < 64:  # no audio packet fits: an empty stream (an Ogg header alone is 129 bytes)
        return b"", 48000 if codec == "opus" else 0
    try:
        container = av.open(io.BytesIO(bytes(data)), mode="r", format=_DEMUXERS[codec])
    except av.error.EOFError:
        return b"", 0  # headers only: a clip with no audio
    with container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono")
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for converted in resampler.resample(frame):
                out.append(converted.to_ndarray().reshape(-1))
        for converted in resampler.resample(None):
            out.append(converted.to_ndarray().reshape(-1))
        rate = rate or stream.rate
    samples = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
    return samples.astype("<i2").tobytes(), rate


def decode_wav(data: bytes) -> tuple[bytes, int]:
    """Parse a 16-bit PCM WAV (streaming 0xFFFFFFFF sizes and a truncated last sample tolerated) to mono."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, fmt_chunk = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_chunk = data[body : body + size]
        elif chunk_id == b"data":
            if fmt_chunk is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            # A streaming header says UNKNOWN_SIZE; a cut stream is shorter than it says: take what is there.
            end = len(data) if size == UNKNOWN_SIZE else min(body + size, len(data))
            return _wav_samples(fmt_chunk, data[body:end])
        pos = body + size + size % 2  # RIFF chunks are padded to even length
    raise ValueError("WAV stream has no data chunk")


def _wav_samples(fmt_chunk: bytes, payload: bytes) -> tuple[bytes, int]:
    if len(fmt_chunk) < 16:
        raise ValueError("WAV fmt chunk too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    # 0xFFFE (WAVE_FORMAT_EXTENSIBLE) is what sox and ffmpeg write for the same PCM data.
    if tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
        raise ValueError(f"only 16-bit PCM WAV is supported (format tag {tag:#x}, {bits} bits)")
    frame = channels * PCM_SAMPLE_WIDTH
    samples = np.frombuffer(payload[: len(payload) - len(payload) % frame], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype("<i2")
    return samples.tobytes(), rate


def decode_mp3(data: bytes) -> tuple[bytes, int]:
    """Decode an MP3 stream to PCM16 mono with miniaudio (a test dependency, imported only here)."""
    import miniaudio  # lazy: production code never decodes MP3, so never needs the decoder

    # mp3_read_s16 keeps the stream's own rate and channels (miniaudio.decode would resample to 44.1 kHz).
    decoded = miniaudio.mp3_read_s16(bytes(data))
    samples = np.frombuffer(decoded.samples, dtype=np.int16)
    if decoded.nchannels > 1:
        samples = samples.reshape(-1, decoded.nchannels).mean(axis=1).round().astype(np.int16)
    return samples.astype("<i2").tobytes(), decoded.sample_rate


def duration_seconds(data: bytes, fmt: AudioFormat) -> float:
    """Playing time of a whole stream in ``fmt``, measured by decoding it."""
    pcm16, rate = decode_to_pcm16(data, fmt)
    return len(pcm16) / PCM_SAMPLE_WIDTH / rate


def _as_float(pcm16: bytes) -> np.ndarray:
    usable = len(pcm16) - len(pcm16) % PCM_SAMPLE_WIDTH
    return np.frombuffer(pcm16[:usable], dtype="<i2").astype(np.float64) / _FULL_SCALE


def rms(pcm16: bytes) -> float:
    """Root-mean-square level of PCM16 as a fraction of full scale (1.0 = full-scale square wave; 0.0 if empty)."""
    x = _as_float(pcm16)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def dominant_frequency(pcm16: bytes, rate: int) -> float:
    """Frequency in Hz of the strongest spectral peak (Hann window, parabolic interpolation); 0.0 if too short."""
    x = _as_float(pcm16)
    if x.size < 4:
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size)))
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        # Fit a parabola through the log magnitudes around the peak: sub-bin accuracy for short clips.
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator else 0.0
    return float((peak + offset) * rate / x.size)
