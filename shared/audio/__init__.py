"""Audio formats and the streaming conversions between them: resampling, G.711, WAV, MP3.

PCM means signed 16-bit little-endian mono throughout. ``analysis`` (decoding and measuring, for
tests) is not imported here, so production code never pulls in its MP3 decoder.
"""

from shared.audio.encoder import OutputEncoder
from shared.audio.formats import SUPPORTED_FORMATS, AudioFormat, UnsupportedFormat, parse_format
from shared.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from shared.audio.mp3 import Mp3StreamEncoder
from shared.audio.resample import StreamResampler
from shared.audio.wav import streaming_wav_header, wav_header

__all__ = [
    "SUPPORTED_FORMATS",
    "AudioFormat",
    "Mp3StreamEncoder",
    "OutputEncoder",
    "StreamResampler",
    "UnsupportedFormat",
    "alaw_decode",
    "alaw_encode",
    "parse_format",
    "streaming_wav_header",
    "ulaw_decode",
    "ulaw_encode",
    "wav_header",
]
