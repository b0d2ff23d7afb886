"""``python -m gateway.keys_cli``: create, list, update and revoke client keys, straight in Redis (REDIS_URL).

    python -m gateway.keys_cli create --name acme --quota-chars 200000 --max-contexts 5 --rate-per-minute 120
    python -m gateway.keys_cli list
    python -m gateway.keys_cli revoke key_0123abcd...

Limits default to DEFAULT_KEY_*; ``unlimited`` lifts one. The plaintext key is printed once, at
creation; Redis holds only its SHA-256.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.auth.keystore import KeyRecord, KeyStore
from shared.redis_client import create_redis
from shared.settings import Settings, SettingsError

UNSET: Any = object()


def _limit(raw: str) -> int | None:
    if raw.lower() in ("unlimited", "none"):
        return None
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 or 'unlimited'")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway.keys_cli", description="Manage client API keys.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("create", "create a key (prints it once)"), ("update", "change a key's limits")):
        c = sub.add_parser(name, help=helptext)
        if name == "create":
            c.add_argument("--name", required=True)
        else:
            c.add_argument("key_id")
        c.add_argument("--quota-chars", type=_limit, default=UNSET, help="characters per UTC day")
        c.add_argument("--max-contexts", type=_limit, default=UNSET, help="concurrent contexts")
        c.add_argument("--rate-per-minute", type=_limit, default=UNSET, help="contexts started per minute")
        c.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true")
    rv = sub.add_parser("revoke", help="revoke a key at once")
    rv.add_argument("key_id")
    rv.add_argument("--json", action="store_true")
    return p


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    redis = create_redis(settings.redis_url, max_connections=4)
    store = KeyStore(redis)
    try:
        limits = {k: getattr(args, k) for k in ("quota_chars", "max_contexts", "rate_per_minute")
                  if getattr(args, k, UNSET) is not UNSET}
        if args.command == "create":
            defaults = {"quota_chars": settings.default_key_quota_chars,
                        "max_contexts": settings.default_key_max_contexts,
                        "rate_per_minute": settings.default_key_rate_per_minute}
            rec, plaintext = await store.create(args.name, **{**defaults, **limits})
            if args.json:
                print(json.dumps({"key": plaintext, **rec.to_json()}))
            else:
                print(f"created {rec.key_id} ({rec.name})\n\n    {plaintext}\n\n"
                      "Store it now: it is not shown again.")
                _print_table([rec])
            return 0
        if args.command == "list":
            recs = await store.list()
            if args.json:
                print(json.dumps([r.to_json() for r in recs]))
            else:
                _print_table(recs)
            return 0
        rec_or_none = (await store.update(args.key_id, **limits) if args.command == "update"
                       else await store.revoke(args.key_id))
        if rec_or_none is None:
            print(f"no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(json.dumps(rec_or_none.to_json()) if args.json else f"{args.command}d {rec_or_none.key_id}")
        return 0
    finally:
        await redis.aclose()


def _print_table(recs: list[KeyRecord]) -> None:
    def show(v: int | None) -> str:
        return "unlimited" if v is None else str(v)

    print(f"{'id':22} {'name':20} {'prefix':16} {'chars/day':>10} {'contexts':>9} {'per min':>8} state")
    for r in recs:
        state = "active" if r.active else "revoked " + time.strftime("%Y-%m-%d", time.gmtime(r.revoked_at or 0))
        print(f"{r.key_id:22} {r.name[:20]:20} {r.display:16} {show(r.quota_chars):>10} "
              f"{show(r.max_contexts):>9} {show(r.rate_per_minute):>8} {state}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
