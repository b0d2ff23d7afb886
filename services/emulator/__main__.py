"""``python -m emulator --host 127.0.0.1 --port N [--connect-delay-ms ...]``: run the emulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from emulator.config import EmulatorConfig
from emulator.runner import run_emulator


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`EmulatorConfig` field, plus ``--host`` and ``--port``."""
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="ElevenLabs-compatible TTS emulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the ready line)")
    for f in dataclasses.fields(EmulatorConfig):
        help_text = (f.metadata.get("help") or "").strip() or None
        if f.name == "reject_voice_ids":
            parser.add_argument(
                "--reject-voice-id",
                _flag(f.name),
                dest=f.name,
                action="append",
                metavar="VOICE_ID",
                help=help_text,
            )
        elif f.name == "http_split_samples":
            parser.add_argument(_flag(f.name), action="store_true", default=None, help=help_text)
        elif f.name in ("api_key", "close_reason", "handshake_refusal"):
            parser.add_argument(_flag(f.name), type=str, default=None, help=help_text)
        elif f.type in ("int", "int | None"):
            parser.add_argument(_flag(f.name), type=int, default=None, help=help_text)
        else:
            parser.add_argument(_flag(f.name), type=float, default=None, help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The config the parsed flags describe (unset flags keep the defaults)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(EmulatorConfig):
        value = getattr(args, f.name)
        if value is not None:
            changes[f.name] = frozenset(value) if f.name == "reject_voice_ids" else value
    return EmulatorConfig(**changes)


async def _serve(host: str, port: int, config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_emulator(config, host=host, port=port) as emu:
        # The one line a parent process waits for before it connects.
        print(f"emulator listening on {emu.http_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until SIGINT/SIGTERM, return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
