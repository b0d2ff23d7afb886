"""The demo page in a real browser: Debian's chromium, headless, driven by Playwright against a live stack.

Gateway and worker (local Piper voice) run in this process on a real Redis; the page loads from the
gateway, speaks, shows its figures, is interrupted with Stop, and streams typed text. Screenshots go
to tests/artifacts/ so a person can look at what the page shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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


async def test_demo_page_speaks_and_stops(redis_url: str) -> None:
    executable = ensure_chromium()
    async_playwright = _playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = fast_settings(redis_url, providers=("local",), first_audio_timeout_s=20.0)
    problems: list[str] = []
    async with running_worker(settings), running_gateway(settings) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 860}, device_scale_factor=1)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            await page.goto(base + "/", wait_until="load")

            # Voices come from /v1/catalog, the session from /v1/ws.
            await page.wait_for_function("() => document.querySelector('#voice').disabled === false", timeout=15000)
            assert await page.eval_on_selector("#voice", "s => [...s.options].map(o => o.value)") == ["joe"]
            await page.wait_for_selector("#conn[data-state=connected]", timeout=15000)
            assert re.match(r"session \S+", await page.inner_text("#session"))

            # Speak: chunks arrive, the time to first audio shows, Web Audio is running.
            await page.fill("#text", LONG_TEXT)
            await page.click("#play")
            await page.wait_for_function(
                "() => { const f = window.ttsDemo.figures(); return f && f.chunks >= 3 && f.ttfaMs !== null; }",
                timeout=30000)
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
        finally:
            await browser.close()
    assert not problems, problems
    print(f"\nbrowser: ttfa {ttfa_text}, chunks at stop {stopped['chunks']}, typed {typed['seconds']:.2f}s")
