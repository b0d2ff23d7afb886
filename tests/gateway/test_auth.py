"""Client keys, browser tokens and the admin token, through the real gateway on a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest
from gateway.auth.keystore import hash_key
from gateway.auth.tokens import TokenSigner

from shared import keys
from shared.errors import WS_UNAUTHORIZED
from tests.gateway.tenancy_support import ADMIN, TOKEN_SECRET, tenancy_stack
from tests.support.stack import NativeClient


async def test_keys_are_stored_hashed_and_shown_once(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False) as s:
        created = await s.create_key("acme", quota_chars=500, max_contexts=3, rate_per_minute=60)
        plaintext = created["key"]
        assert plaintext.startswith("tts_live_")
        status, listing = await s.admin("GET", "/admin/keys")
        assert status == 200
        [listed] = listing["keys"]
        assert listed["id"] == created["id"] and "key" not in listed
        assert (listed["quota_chars_per_day"], listed["max_contexts"], listed["rate_per_minute"]) == (500, 3, 60)
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        try:
            dump = b"".join([k + (await r.dump(k) or b"") for k in await r.keys("*")])
            assert plaintext.encode() not in dump  # never stored in the clear
            assert await r.get(keys.client_key(hash_key(plaintext))) == created["id"].encode()
        finally:
            await r.aclose()


async def test_missing_or_bad_key_is_a_401_json_before_the_upgrade(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False) as s:
        for headers in ({}, {"xi-api-key": "tts_live_nope-nope-nope-nope"}, {"Authorization": "Bearer junk"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.http.ws_connect(s.ws_url, headers=headers)
            assert e.value.status == 401
            async with s.http.get(s.ws_url, headers=headers) as r:
                assert r.status == 401
                body = await r.json()
                assert body["code"] == "unauthorized"


async def test_header_bearer_and_token_all_open_a_session(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False) as s:
        key = (await s.create_key())["key"]
        for headers in ({"xi-api-key": key}, {"Authorization": f"Bearer {key}"}):
            async with NativeClient.connect(s.base, s.http, headers=headers) as c:
                assert c.session_id
        async with s.http.post(s.base + "/v1/tokens", headers={"xi-api-key": key}, json={"ttl_s": 60}) as r:
            assert r.status == 200
            tok = await r.json()
        assert tok["token"].startswith("tts_tok_") and 55 <= tok["expires_at"] - time.time() <= 61
        async with NativeClient.connect(s.base, s.http, path=f"/v1/ws?token={tok['token']}") as c:
            assert c.session_id
        # A token cannot mint its own successor (it would never expire).
        async with s.http.post(s.base + f"/v1/tokens?token={tok['token']}") as r:
            assert r.status == 403


async def test_tokens_expire_and_are_rejected_when_tampered_with(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False, token_ttl_s=1.0) as s:
        created = await s.create_key()
        signer = TokenSigner(TOKEN_SECRET)
        good, _ = signer.mint(created["id"], 60)
        expired, _ = signer.mint(created["id"], 60, now=time.time() - 61)
        payload, sig = good[len("tts_tok_"):].split(".")
        forged_payload = TokenSigner("another secret").mint("key_someone_else", 60)[0]
        tampered = [good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                    f"tts_tok_{payload[:-1]}x.{sig}",
                    forged_payload,
                    "tts_tok_" + payload]
        for bad in [expired, *tampered]:
            async with s.http.get(s.ws_url, params={"token": bad}) as r:
                assert r.status == 401, bad
                assert (await r.json())["code"] == "unauthorized"
        async with NativeClient.connect(s.base, s.http, path=f"/v1/ws?token={good}"):
            pass
        # Minted through the API, a token lives at most TOKEN_TTL_S.
        async with s.http.post(s.base + "/v1/tokens", headers={"xi-api-key": created["key"]},
                               json={"ttl_s": 3600}) as r:
            short = (await r.json())["token"]
        await asyncio.sleep(1.1)
        async with s.http.get(s.ws_url, params={"token": short}) as r:
            assert r.status == 401
            assert "expired" in (await r.json())["message"]


async def test_admin_routes_reject_client_keys_and_wrong_tokens(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False) as s:
        key = (await s.create_key())["key"]
        signer = TokenSigner(TOKEN_SECRET)
        token, _ = signer.mint("key_x", 60)
        for headers in ({}, {"Authorization": f"Bearer {key}"}, {"xi-api-key": key},
                        {"Authorization": f"Bearer {ADMIN}x"}, {"Authorization": f"Bearer {ADMIN[:-1]}"},
                        {"X-Admin-Token": "wrong"}, {"Authorization": f"Bearer {token}"}, {"Authorization": ADMIN}):
            for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("DELETE", "/admin/keys/k"),
                                 ("GET", "/admin/keys/k/usage")):
                async with s.http.request(method, s.base + path, headers=headers, json={"name": "x"}) as r:
                    assert r.status == 401, (headers, method, path)
                    assert (await r.json())["code"] == "unauthorized"
        async with s.http.get(s.base + "/admin/keys", headers={"X-Admin-Token": ADMIN}) as r:
            assert r.status == 200


async def test_admin_api_is_closed_without_admin_token(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False, admin_token=None) as s, \
            s.http.get(s.base + "/admin/keys", headers={"Authorization": "Bearer "}) as r:
        assert r.status == 403
        assert (await r.json())["code"] == "forbidden"


async def test_revoked_key_stops_at_once_for_new_contexts(redis_url: str) -> None:
    async with tenancy_stack(redis_url) as s:
        created = await s.create_key()
        headers = {"xi-api-key": created["key"]}
        async with s.http.post(s.base + "/v1/tokens", headers=headers) as r:
            token = (await r.json())["token"]
        async with NativeClient.connect(s.base, s.http, headers=headers) as c:
            first = await c.speak("a", "Hello.", format="pcm_16000", timeout=60)
            assert first.final is not None, first.error
            status, body = await s.admin("DELETE", f"/admin/keys/{created['id']}")
            assert status == 200 and body["active"] is False
            # The open session's next context is refused, and the session ends with 4401.
            await c.send(type="start", context_id="b", text="Again.", end=True)
            await c.pump_until(lambda c: c.ws.closed, timeout=10)
            assert c.result("b").error is not None and c.result("b").error["code"] == "unauthorized"
            assert c.ws.close_code == WS_UNAUTHORIZED
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.http.ws_connect(s.ws_url, headers=headers)
        assert e.value.status == 401
        async with s.http.get(s.ws_url, params={"token": token}) as r:
            assert r.status == 401  # its tokens die with it
        status, listing = await s.admin("GET", "/admin/keys")
        assert listing["keys"][0]["active"] is False


async def test_dev_mode_needs_no_key(redis_url: str) -> None:
    async with tenancy_stack(redis_url, worker=False, auth_disabled=True) as s:
        async with NativeClient.connect(s.base, s.http) as c:
            assert c.session_id
        async with s.http.get(s.base + "/v1/usage") as r:
            assert r.status == 200 and (await r.json())["key_id"] == "dev"


def test_keys_cli_create_list_revoke(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.keys_cli", *args], env=env, capture_output=True,
                              text=True, timeout=30, check=False)

    out = cli("create", "--name", "cli-co", "--quota-chars", "1000", "--max-contexts", "2",
              "--rate-per-minute", "30", "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["key"].startswith("tts_live_") and created["quota_chars_per_day"] == 1000
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    [rec] = json.loads(listed.stdout)
    assert rec["id"] == created["id"] and rec["active"] and created["key"] not in listed.stdout
    human = cli("list")
    assert "cli-co" in human.stdout and created["key"] not in human.stdout
    revoked = cli("revoke", created["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(cli("list", "--json").stdout)[0]["active"] is False
    missing = cli("revoke", "key_nope")
    assert missing.returncode != 0 and "no key" in missing.stderr
