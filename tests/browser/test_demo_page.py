"""The demo page in a real browser: Debian's chromium, headless, driven by Playwright against a live stack.

Gateway and worker (local Piper voice) run in this process on a real Redis; the page loads from the
gateway, speaks, shows its figures, is interrupted with Stop, and streams typed text. Screenshots go
to tests/artifacts/ so a person can look at what the page shows.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from gateway.auth.keystore import KeyStore

from shared.settings import Settings
from tests.browser.chromium import CHROMIUM_ARGS, ensure_chromium
from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LONG_TEXT = ("Hello! This sentence is spoken while the gateway is still streaming the next one. "
             "Streaming speech means the first words play long before the last ones are ready. "
             "Press stop at any time to interrupt me, and nothing stale will follow.")

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]


def _playwright() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the 'playwright' package is missing: pip install -e '.[test]' (it drives the system "
                    "chromium; no browser download is needed)", pytrace=False)
    return async_playwright


async def _figures(page: Any) -> dict[str, Any]:
    return await page.evaluate("window.ttsDemo.figures()")


@contextlib.asynccontextmanager
async def demo_page(settings: Settings, problems: list[str], expected_errors: str = "") -> AsyncIterator[Any]:
    """A live gateway and worker, and the demo page open in headless chromium; yields the page.

    Page errors and console errors or warnings (other than those matching ``expected_errors``) are
    appended to ``problems``.
    """
    executable = ensure_chromium()
    async_playwright = _playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def on_console(m: Any) -> None:
        if m.type in ("error", "warning") and not (expected_errors and re.search(expected_errors, m.text)):
            problems.append(f"console {m.type}: {m.text}")

    async with running_worker(settings), running_gateway(settings) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 860}, device_scale_factor=1)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", on_console)
            await page.goto(base + "/", wait_until="load")
            yield page
        finally:
            await browser.close()


async def _speak_until_audio(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#play")
    await page.wait_for_function(
        "() => { const f = window.ttsDemo.figures(); return f && f.chunks >= 3 && f.ttfaMs !== null; }",
        timeout=30000)


async def test_demo_page_speaks_and_stops(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",), first_audio_timeout_s=20.0)
    problems: list[str] = []
    async with demo_page(settings, problems) as page:
        # Voices come from /v1/catalog, the session from /v1/ws.
        await page.wait_for_function("() => document.querySelector('#voice').disabled === false", timeout=15000)
        assert await page.eval_on_selector("#voice", "s => [...s.options].map(o => o.value)") == ["joe"]
        await page.wait_for_selector("#conn[data-state=connected]", timeout=15000)
        assert re.match(r"session \S+", await page.inner_text("#session"))

        # Speak: chunks arrive, the time to first audio shows, Web Audio is running.
        await _speak_until_audio(page, LONG_TEXT)
        ttfa_text = await page.inner_text("#ttfa")
        assert re.fullmatch(r"\d+ ms", ttfa_text), ttfa_text
        playing = await _figures(page)
        assert playing["audioState"] == "running", playing
        assert playing["state"] in ("streaming", "playing"), playing
        # The output really sounds: Web Audio's analyser sees signal (and the scope shows a waveform).
        await page.wait_for_function("() => window.ttsDemo.figures().level > 0.02", timeout=10000)
        await page.wait_for_function("() => document.querySelector('#level').offsetHeight > 8",
                                     timeout=10000)
        await page.screenshot(path=str(ARTIFACTS / "demo_playing.png"), full_page=True)

        # Stop: the context is cancelled (or already complete), playback ends at once.
        await page.click("#stop")
        await page.wait_for_function("() => window.ttsDemo.figures().state === 'idle'", timeout=5000)
        stopped = await _figures(page)
        assert stopped["scheduled"] == 0, stopped
        await page.wait_for_timeout(500)
        after = await _figures(page)
        assert after["chunks"] == stopped["chunks"], "audio kept arriving for a stopped context"
        assert after["outcome"] in ("cancelled", "completed"), after
        await page.click("details.events summary")  # show the event log in this screenshot
        await page.screenshot(path=str(ARTIFACTS / "demo_stopped.png"), full_page=True)

        # Stream as I type: a context starts on the first keystroke, sentences flush, Enter ends it.
        await page.click("label.toggle")  # the switch a person clicks; the checkbox itself is hidden
        assert await page.is_checked("#live")
        await page.type("#text", "Typing streams text. ", delay=15)
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "() => { const f = window.ttsDemo.figures(); return f.outcome === 'completed' && f.chunks > 0; }",
            timeout=30000)
        typed = await _figures(page)
        assert typed["contextId"] != playing["contextId"]
        assert 0.5 < typed["seconds"] < 10, typed
        await page.screenshot(path=str(ARTIFACTS / "demo_typed.png"), full_page=True)
    assert not problems, problems
    print(f"\nbrowser: ttfa {ttfa_text}, chunks at stop {stopped['chunks']} (gaps {stopped['gaps']}), "
          f"typed {typed['seconds']:.2f}s (gaps {typed['gaps']})")


async def test_demo_page_asks_for_a_key_and_uses_a_token_when_auth_is_on(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",), first_audio_timeout_s=20.0, auth_disabled=False,
                             token_secret="demo-page-token-secret-0123456789")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        _, key = await KeyStore(redis).create("browser-test", quota_chars=None, max_contexts=None,
                                              rate_per_minute=None)
    finally:
        await redis.aclose()
    problems: list[str] = []
    # The browser reports the refused upgrade and the 401s of the probe and the keyless mint itself.
    async with demo_page(settings, problems, expected_errors=r"401|WebSocket connection") as page:
        await page.wait_for_selector("#auth:not([hidden])", timeout=15000)
        await page.fill("#apikey", key)
        await page.click("#auth-go")
        await page.wait_for_selector("#conn[data-state=connected]", timeout=15000)
        await _speak_until_audio(page, "A token opened this socket.")
        assert "obtained a session token" in (await page.text_content("#log") or "")
    assert not problems, problems
