"""Typed keys for everything the gateway keeps on its aiohttp Application."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.queueops import QueueOps
from gateway.services import GatewayServices
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", GatewayServices)
BACKGROUND = web.AppKey("background_tasks", list[asyncio.Task[None]])
QUEUE_OPS = web.AppKey("queue_ops", QueueOps)
