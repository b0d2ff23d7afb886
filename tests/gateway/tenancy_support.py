"""Helpers for the tenancy tests: a gateway with keys enforced, admin calls, key creation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.settings import Settings
from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker

ADMIN = "admin-secret-for-tests"
TOKEN_SECRET = "token-secret-for-tests"


def tenancy_settings(redis_url: str, **overrides: Any) -> Settings:
    """Keys enforced, an admin token and a fixed token secret."""
    # A generous heartbeat TTL: these tests are about keys, not about dead workers, and a busy
    # machine can delay a beat past fast_settings' 0.8 s.
    base: dict[str, Any] = {"auth_disabled": False, "admin_token": ADMIN, "token_secret": TOKEN_SECRET,
                            "providers": ("local",), "heartbeat_ttl_s": 3.0}
    base.update(overrides)
    return fast_settings(redis_url, **base)


@dataclass
class Stack:
    """A gateway (and optionally a worker) plus an HTTP client."""

    base: str
    http: aiohttp.ClientSession
    settings: Settings

    @property
    def ws_url(self) -> str:
        """The native WebSocket URL."""
        return self.base.replace("http", "ws", 1) + "/v1/ws"

    async def admin(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """An admin call with the right token."""
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json()

    async def create_key(self, name: str = "acme", **limits: Any) -> dict[str, Any]:
        """A fresh key (the response includes the plaintext under ``key``)."""
        status, body = await self.admin("POST", "/admin/keys", json={"name": name, **limits})
        assert status == 201, body
        return body


@contextlib.asynccontextmanager
async def tenancy_stack(redis_url: str, *, worker: bool = True, **overrides: Any) -> AsyncIterator[Stack]:
    """Gateway (+ local-voice worker) with keys enforced."""
    settings = tenancy_settings(redis_url, **overrides)
    async with contextlib.AsyncExitStack() as stack:
        if worker:
            await stack.enter_async_context(running_worker(settings))
        base = await stack.enter_async_context(running_gateway(settings))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        if worker:
            await wait_ready(base, http)
        yield Stack(base, http, settings)


async def wait_ready(base: str, http: aiohttp.ClientSession, timeout: float = 30.0) -> None:
    """Until the gateway's /readyz sees a live worker (a busy machine may delay its first heartbeat)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(base + "/readyz") as r:
            if r.status == 200:
                return
        assert asyncio.get_running_loop().time() < deadline, "no worker became ready"
        await asyncio.sleep(0.05)
