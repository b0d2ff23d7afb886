"""Lua scripts of the phrase cache: read-and-touch, and store-with-eviction, each atomic.

Bookkeeping (names in shared/keys.py): ``CACHE_INDEX`` scores digests by last use (LRU order),
``CACHE_EXPIRY`` by expiry time, ``CACHE_SIZES`` holds each entry's size and ``CACHE_BYTES``
their sum. Entries expire by TTL on their own; the store script first retires expired digests
from the books, then evicts least recently used entries until the new one fits under the cap.
Entry keys are ``ARGV`` prefix + digest: the prefix comes from shared/keys.py, not from here.
"""

from __future__ import annotations

# KEYS: entry, lru index. ARGV: now, digest. → the entry or nil; a hit moves it to the LRU's young end.
LOOKUP = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2]) end
return v
"""

# KEYS: entry, lru index, expiry index, sizes hash, bytes counter.
# ARGV: digest, blob, ttl ms, now (s), max bytes, entry key prefix.
# → {stored (1/0), evicted entries, evicted bytes}
STORE = """
local digest, blob, ttl_ms, now, max_bytes, prefix =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local evicted, evicted_bytes = 0, 0
local function forget(d)
  local size = tonumber(redis.call('HGET', KEYS[4], d) or '0')
  redis.call('HDEL', KEYS[4], d)
  redis.call('ZREM', KEYS[2], d)
  redis.call('ZREM', KEYS[3], d)
  redis.call('DEL', prefix .. d)
  if size > 0 then redis.call('DECRBY', KEYS[5], size) end
  return size
end
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)) do forget(d) end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0, 0} end
-- in the books but gone (deleted by hand, or by Redis under maxmemory): settle before re-adding
if redis.call('HEXISTS', KEYS[4], digest) == 1 then forget(digest) end
local size = string.len(blob)
if size > max_bytes then return {0, 0, 0} end
local used = tonumber(redis.call('GET', KEYS[5]) or '0')
while used + size > max_bytes do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then
    -- nothing is indexed, so nothing can be counted: repair a drifted counter
    redis.call('SET', KEYS[5], 0)
    used = 0
    break
  end
  evicted_bytes = evicted_bytes + forget(oldest[1])
  evicted = evicted + 1
  used = tonumber(redis.call('GET', KEYS[5]) or '0')
end
if used + size > max_bytes then return {0, evicted, evicted_bytes} end
redis.call('SET', KEYS[1], blob, 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], now, digest)
redis.call('ZADD', KEYS[3], now + ttl_ms / 1000, digest)
redis.call('HSET', KEYS[4], digest, size)
redis.call('INCRBY', KEYS[5], size)
return {1, evicted, evicted_bytes}
"""
