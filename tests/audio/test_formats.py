"""Format names: the supported set, their parameters and wire properties."""

from __future__ import annotations

import pytest

from shared.audio.formats import SUPPORTED_FORMATS, AudioFormat, UnsupportedFormat, parse_format

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3 = (
    "mp3_22050_32",
    "mp3_24000_48",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
)
OPUS = tuple(f"opus_48000_{k}" for k in (32, 64, 96, 128, 192))  # ElevenLabs' names (Ogg Opus)
AAC = ("aac_24000_64", "aac_44100_128", "aac_48000_128")  # ours: OpenAI's ``aac`` is the 24 kHz one


def test_supported_set_is_exactly_the_documented_one() -> None:
    expected = (
        {f"pcm_{r}" for r in RATES} | {f"wav_{r}" for r in RATES} | {"ulaw_8000", "alaw_8000"} | set(MP3)
        | set(OPUS) | set(AAC) | {f"flac_{r}" for r in RATES}
    )
    assert set(SUPPORTED_FORMATS) == expected
    assert len(SUPPORTED_FORMATS) == len(expected)


@pytest.mark.parametrize("name", SUPPORTED_FORMATS)
def test_name_round_trips_through_its_fields(name: str) -> None:
    fmt = parse_format(name)
    rebuilt = f"{fmt.codec}_{fmt.sample_rate}" + (f"_{fmt.bitrate_kbps}" if fmt.bitrate_kbps else "")
    assert fmt.name == name == rebuilt
    assert (fmt.bitrate_kbps is not None) == (fmt.codec in ("mp3", "opus", "aac"))
    assert parse_format(name) is parse_format(name)


def test_parameters() -> None:
    assert parse_format("pcm_24000") == AudioFormat("pcm_24000", "pcm", 24000)
    assert parse_format("mp3_44100_128") == AudioFormat("mp3_44100_128", "mp3", 44100, 128)
    assert parse_format("ulaw_8000").sample_rate == 8000


@pytest.mark.parametrize(
    ("name", "content_type", "bytes_per_second", "is_raw", "width"),
    [
        ("pcm_24000", "audio/pcm;rate=24000;channels=1", 48000, True, 2),
        ("pcm_8000", "audio/pcm;rate=8000;channels=1", 16000, True, 2),
        ("ulaw_8000", "audio/basic", 8000, True, 1),
        ("alaw_8000", "audio/PCMA;rate=8000", 8000, True, 1),
        ("wav_16000", "audio/wav", 32000, False, 2),
        ("mp3_44100_128", "audio/mpeg", 16000, False, None),
        ("mp3_22050_32", "audio/mpeg", 4000, False, None),
        ("opus_48000_64", "audio/ogg;codecs=opus", 8000, False, None),
        ("aac_24000_64", "audio/aac", 8000, False, None),
        ("flac_24000", "audio/flac", 24000, False, None),  # nominal: half of PCM16
    ],
)
def test_wire_properties(
    name: str, content_type: str, bytes_per_second: int, is_raw: bool, width: int | None
) -> None:
    fmt = parse_format(name)
    assert fmt.content_type == content_type
    assert fmt.bytes_per_second == bytes_per_second
    assert fmt.is_raw is is_raw
    assert fmt.bytes_per_sample == width


@pytest.mark.parametrize(
    "bad", ["", "pcm", "pcm_11025", "PCM_24000", "mp3_44100", "opus_48000_48", "opus_24000_64", "ulaw_16000"]
)
def test_unknown_names_are_rejected_with_the_supported_list(bad: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        parse_format(bad)
    assert isinstance(info.value, ValueError)
    assert repr(bad) in str(info.value)
    assert all(name in str(info.value) for name in SUPPORTED_FORMATS)


def test_non_string_is_rejected_as_unsupported() -> None:
    with pytest.raises(UnsupportedFormat):
        parse_format(["pcm_24000"])  # type: ignore[arg-type]


def test_formats_are_frozen() -> None:
    fmt = parse_format("pcm_16000")
    with pytest.raises(AttributeError):
        fmt.sample_rate = 8000  # type: ignore[misc]
