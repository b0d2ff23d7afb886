"""Over a key's limits, the HTTP endpoints answer 429 with Retry-After and a JSON body naming the code."""

from __future__ import annotations

from typing import Any

from tests.gateway.tenancy_support import Stack, tenancy_stack
from tests.support.stack import NativeClient

VOICE = "joe"  # the local Piper voice


async def _el_tts(s: Stack, key: str, text: str) -> tuple[int, dict[str, str], Any]:
    async with s.http.post(f"{s.base}/v1/text-to-speech/{VOICE}", params={"output_format": "pcm_16000"},
                           headers={"xi-api-key": key}, json={"text": text}) as r:
        body = await (r.json() if r.content_type == "application/json" else r.read())
        return r.status, dict(r.headers), body


async def test_each_limit_is_a_429_with_retry_after(redis_url: str) -> None:
    async with tenancy_stack(redis_url) as s:
        rate = (await s.create_key("rate", quota_chars=None, max_contexts=None, rate_per_minute=1))["key"]
        status, _, audio = await _el_tts(s, rate, "Hi.")
        assert status == 200 and len(audio) > 0
        status, headers, body = await _el_tts(s, rate, "Hi.")
        assert status == 429 and body["detail"]["status"] == "rate_limited"
        assert 1 <= int(headers["Retry-After"]) <= 60

        quota = (await s.create_key("quota", quota_chars=5, max_contexts=None, rate_per_minute=None))["key"]
        status, headers, body = await _el_tts(s, quota, "Far more than five characters.")
        assert status == 429 and body["detail"]["status"] == "quota_exceeded"
        assert 1 <= int(headers["Retry-After"]) <= 86400
        async with s.http.post(f"{s.base}/v1/audio/speech", headers={"Authorization": f"Bearer {quota}"},
                               json={"model": "tts-1", "input": "Far more than five characters.",
                                     "voice": VOICE}) as r:
            assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 86400
            assert (await r.json())["error"]["code"] == "quota_exceeded"

        conc = (await s.create_key("conc", quota_chars=None, max_contexts=1, rate_per_minute=None))["key"]
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": conc}) as c:
            await c.send(type="start", context_id="held")  # streamed: holds its slot until ended
            await c.pump_until(lambda c: c.result("held").started is not None, timeout=10)
            status, headers, body = await _el_tts(s, conc, "Hi.")
            assert status == 429 and body["detail"]["status"] == "too_many_contexts"
            assert int(headers["Retry-After"]) >= 1
        # Another key is untouched by all of the above.
        free = (await s.create_key("free"))["key"]
        status, _, _ = await _el_tts(s, free, "Hi.")
        assert status == 200
