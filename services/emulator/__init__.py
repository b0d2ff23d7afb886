"""ElevenLabs-compatible TTS emulator: both WebSocket protocols, the HTTP API, decodable synthetic audio.

Tests run it in-process (``async with run_emulator(config) as emu``) or as its own process
(``python -m emulator --port 0``) and steer it at runtime through ``/_emulator/*``; see README.md here.
"""

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.runner import RunningEmulator, run_emulator
from emulator.stats import Stats
from emulator.synth import decode_text, synthesize

__all__ = [
    "EmulatorConfig",
    "RunningEmulator",
    "Stats",
    "create_app",
    "decode_text",
    "run_emulator",
    "synthesize",
]
