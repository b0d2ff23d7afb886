"""structlog set-up: JSON when not on a terminal, console otherwise; context bound through contextvars.

Never log text, audio or secrets: :func:`configure` installs a processor that replaces any known
secret value with ``***`` as a last line of defence, but call sites must not pass them in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRETS: list[str] = []


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for s in _SECRETS:
            if s and s in value:
                value = value.replace(s, "***")
    return value


def _scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _SECRETS:
        for k, v in list(event.items()):
            event[k] = _scrub(v)
    return event


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), service: str = "") -> None:
    """Configure structlog and stdlib logging once per process."""
    _SECRETS[:] = [s for s in secrets if s]
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, _add_service(service))
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _scrub_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route stdlib loggers (aiohttp, arq, redis) through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _scrub_secrets, renderer],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # aiohttp's access log names every request path; keep it but at warning level unless debugging.
    logging.getLogger("aiohttp.access").setLevel(max(lvl, logging.WARNING))
    logging.getLogger("arq").setLevel(max(lvl, logging.WARNING))


def _add_service(service: str) -> Any:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event
    return add


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(name)
