"""Gateway and worker over ``rediss://`` with a password: TLS and AUTH as production runs them.

A real ``redis-server`` with TLS only (plain port off) and ``requirepass``, its certificate from a
throw-away CA made with the ``openssl`` CLI. The services trust that CA through ``SSL_CERT_FILE``
(Python's default verify paths), exactly as they would trust a managed Redis' CA from the image's
bundle: the certificate and its host name are verified, not skipped.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from emulator.synth import decode_text

from shared.redis_server import find_redis_binary, free_port
from tests.faults.support import report, start_stack
from tests.support.procs import Proc, Procs
from tests.support.stack import NativeClient

PASSWORD = "tls-test-password-7Hq2"


@dataclass
class TlsRedis:
    """A TLS-only redis-server and the CA that signed its certificate."""

    port: int
    ca: Path
    proc: subprocess.Popen[bytes]

    def url(self, password: str = PASSWORD) -> str:
        """rediss:// with the password; ``localhost`` is the name in the certificate."""
        return f"rediss://:{password}@localhost:{self.port}/0"


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make the test certificates")
    d = tmp_path / "tls"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tts test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "redis.key",
             "-out", "redis.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "redis.crt", cwd=d)
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(d), "--loglevel", "warning", "--logfile", str(d / "redis.log")],
        cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsRedis(port, d / "ca.crt", proc)
    deadline = time.monotonic() + 10
    while not _answers(server):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server with TLS did not start: {(d / 'redis.log').read_text(errors='replace')}")
        time.sleep(0.05)
    yield server
    proc.terminate()
    proc.wait(10)


def _answers(server: TlsRedis) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(server.url(), ssl_ca_certs=str(server.ca), socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


# Five service start-ups (three of them importing the whole worker) on a loaded 2-core box: more than
# the suite's default 120 s can go by before anything here is wrong.
@pytest.mark.timeout(400)
async def test_gateway_and_worker_speak_over_tls_redis_with_a_password(procs: Procs, tls_redis: TlsRedis) -> None:
    env: dict[str, Any] = {"SSL_CERT_FILE": str(tls_redis.ca)}
    t0 = time.monotonic()
    stack = await start_stack(procs, tls_redis.url(), workers=1, gateways=1,
                              emulator={"realtime_factor": 10}, **env)
    ready_s = time.monotonic() - t0
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as client:
        res = await client.speak("c1", "Spoken over an encrypted queue.", format="pcm_16000", timeout=20)
    assert res.final is not None and decode_text(res.audio, 16000) == "Spoken over an encrypted queue.", res.error
    # The password never reaches a log line (it is one of Settings.secrets(), which the scrubber hides).
    for proc in (*stack.gateways, *stack.workers):
        assert PASSWORD not in proc.output(), proc.name

    # A wrong password is a configuration error: each service names REDIS_URL and exits 2, no traceback.
    # How soon is no promise (the clock runs from the interpreter's start: imports, then arq's five
    # connection retries a second apart), so both are awaited together, with a loaded box's patience.
    t_bad = time.monotonic()
    bad = [procs.gateway(tls_redis.url("wrong-password"), name="gateway-bad-password", **{**stack.env, **env}),
           procs.worker(tls_redis.url("wrong-password"), name="worker-bad-password", **{**stack.env, **env})]
    for proc in bad:
        proc.expected_exit = 2

    async def exit_after(proc: Proc) -> tuple[int | None, float]:
        code = await proc.wait_exit(180)
        return code, time.monotonic() - t_bad

    exits = await asyncio.gather(*(exit_after(proc) for proc in bad))
    for proc, (code, _) in zip(bad, exits, strict=True):
        assert code == 2, proc.output()[-2000:]
        failed = proc.events("redis_auth_failed")
        assert failed and "REDIS_URL" in failed[0]["hint"], proc.output()[-2000:]
        assert "wrong-password" not in proc.output()
    report("redis_tls", ready_s=round(ready_s, 2), spoke=True, wrong_password_exit=2,
           wrong_password_exit_s={proc.name: round(s, 1) for proc, (_, s) in zip(bad, exits, strict=True)})
