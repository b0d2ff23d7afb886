"""The Lua scripts behind key limits: each check-and-reserve is one atomic step in Redis.

Atomicity is what makes the limits hold with many gateways: two starts racing for the last
characters of a quota (or the last context slot) are serialized by Redis, so one wins and one is
told no, and nothing is ever spent twice. Record field names match gateway/auth/keystore.py.
"""

from __future__ import annotations

# KEYS: key record, usage hash (the context's UTC day), active-context zset, rate counter (this minute)
# ARGV: chars, lease member, now, lease expiry, rate window ttl, usage ttl, active-set ttl
# → {"ok", chars, quota (-1: unlimited)} | {"unauthorized"|"rate_limited"|"too_many_contexts"|"quota_exceeded", detail}
ADMIT = """
local rec = redis.call('HMGET', KEYS[1], 'name', 'revoked_at', 'quota_chars', 'max_contexts', 'rate_per_minute')
if not rec[1] or (rec[2] and rec[2] ~= '') then
  return {'unauthorized', 0}
end
local usage_ttl = tonumber(ARGV[6])
local function reject(code, detail)
  redis.call('HINCRBY', KEYS[2], 'rejected_' .. code, 1)
  redis.call('EXPIRE', KEYS[2], usage_ttl)
  return {code, detail}
end
local rate = tonumber(rec[5])
if rate then
  local n = tonumber(redis.call('GET', KEYS[4]) or '0')
  if n >= rate then return reject('rate_limited', n) end
end
-- expired leases belong to contexts whose gateway died: they no longer hold a slot
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local max_contexts = tonumber(rec[4])
if max_contexts then
  local live = redis.call('ZCARD', KEYS[3])
  if live >= max_contexts then return reject('too_many_contexts', live) end
end
local chars = tonumber(ARGV[1])
local quota = tonumber(rec[3])
if quota then
  local spent = tonumber(redis.call('HGET', KEYS[2], 'used') or '0')
              + tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
  if spent + chars > quota then return reject('quota_exceeded', quota - spent) end
end
if rate then
  redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('HINCRBY', KEYS[2], 'reserved', chars)
redis.call('HINCRBY', KEYS[2], 'contexts', 1)
redis.call('EXPIRE', KEYS[2], usage_ttl)
return {'ok', chars, quota or -1}
"""

# KEYS: key record, usage hash. ARGV: need, usage ttl.
# Reserves exactly ``need`` characters if the quota has them left → need, or -1 - (what is left). Never more: a block
# reserved ahead held characters another context of the key was then refused for.
RESERVE = """
local need = tonumber(ARGV[1])
local quota = tonumber(redis.call('HGET', KEYS[1], 'quota_chars') or '')
if quota then
  local left = quota - tonumber(redis.call('HGET', KEYS[2], 'used') or '0')
                     - tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
  if left < need then
    redis.call('HINCRBY', KEYS[2], 'rejected_quota_exceeded', 1)
    return -1 - math.max(left, 0)
  end
end
redis.call('HINCRBY', KEYS[2], 'reserved', need)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return need
"""

# KEYS: usage hash, active-context zset. ARGV: reserved, charged, lease member, outcome, (unused).
# Turns the reservation into usage (the unused rest is refunded) and frees the context's slot. Cached
# characters are counted by usage metering (gateway/metering.py), with the other metering counters.
SETTLE = """
redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(ARGV[1]))  -- not -x: Lua's -0 is no integer
redis.call('HINCRBY', KEYS[1], 'used', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""
