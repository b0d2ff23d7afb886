"""The Lua scripts behind the account-wide upstream permits (see :mod:`.account` for the policy).

Each runs atomically in Redis on the account's keys (one cluster slot), with Redis' own clock.
"""

from __future__ import annotations

# KEYS: leases, waiters, waiter deadlines (+ ticket counter for ACQUIRE)
# ARGV: limit, lease ttl (ms), wake-list key prefix, then per script
_PRELUDE = """
local leases, waiters, deadlines = KEYS[1], KEYS[2], KEYS[3]
local limit, ttl, wake_prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- lapsed leases belong to dead holders, lapsed tickets to waiters that stopped polling
local function purge()
  local n = redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  for _, ticket in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now)) do
    redis.call('ZREM', waiters, ticket)
    redis.call('ZREM', deadlines, ticket)
    n = n + 1
  end
  return n
end

local function tenant_of(holder)
  return string.match(holder, '^[^:]*:([^:]*):') or ''
end

-- the holders the free permits go to now (see the module docstring): first, in line order, tickets of
-- tenants under their fair share; then what is left, in line order. `extra` (a caller not in line yet)
-- is considered last.
local function plan(extra)
  -- nobody in line (most releases): one O(1) call, no scan of every lease
  if not extra and redis.call('ZCARD', waiters) == 0 then return {} end
  local free = limit - redis.call('ZCARD', leases)
  if free <= 0 then return {} end
  local line = redis.call('ZRANGE', waiters, 0, -1)
  if extra then line[#line + 1] = extra end
  local count, tenants = {}, 0
  for _, h in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    local t = tenant_of(h)
    if not count[t] then count[t] = 0; tenants = tenants + 1 end
    count[t] = count[t] + 1
  end
  for _, h in ipairs(line) do
    local t = tenant_of(h)
    if not count[t] then count[t] = 0; tenants = tenants + 1 end
  end
  local share = math.max(1, math.floor(limit / tenants))
  local chosen, taken = {}, {}
  for _, h in ipairs(line) do
    if free == 0 then break end
    local t = tenant_of(h)
    if count[t] < share then
      count[t] = count[t] + 1
      chosen[#chosen + 1] = h
      taken[h] = true
      free = free - 1
    end
  end
  for _, h in ipairs(line) do
    if free == 0 then break end
    if not taken[h] then
      chosen[#chosen + 1] = h
      free = free - 1
    end
  end
  return chosen
end

-- tell the tickets entitled to the free permits to come and take them
local function wake(skip)
  for _, ticket in ipairs(plan(nil)) do
    if ticket ~= skip then
      local key = wake_prefix .. string.match(ticket, '^[^:]*')
      redis.call('RPUSH', key, ticket)
      redis.call('PEXPIRE', key, ttl)
    end
  end
end

local function keep(key)
  redis.call('PEXPIRE', key, 3 * ttl)
end
"""

# ARGV[4]: holder; ARGV[5]: '1' to join the line when refused. KEYS[4]: ticket counter.
# -> {granted 0|1, permits held account-wide, tickets ahead of the caller, ms to the earliest lease expiry}
ACQUIRE = _PRELUDE + """
local holder = ARGV[4]
local purged = purge()
if redis.call('ZSCORE', leases, holder) then  -- granted by a call whose reply was lost
  redis.call('ZADD', leases, now + ttl, holder)
  return {1, redis.call('ZCARD', leases), 0, -1}
end
local held = redis.call('ZCARD', leases)
local rank = redis.call('ZRANK', waiters, holder)
local ahead = rank or redis.call('ZCARD', waiters)
local granted = false
if ahead == 0 and not rank then
  granted = held < limit  -- nobody in line: the fast path
elseif held < limit then
  local extra = nil
  if not rank then extra = holder end
  for _, h in ipairs(plan(extra)) do
    if h == holder then granted = true; break end
  end
end
if granted then
  if rank then
    redis.call('ZREM', waiters, holder)
    redis.call('ZREM', deadlines, holder)
  end
  redis.call('ZADD', leases, now + ttl, holder)
  keep(leases)
  if purged > 0 then wake(holder) end
  return {1, held + 1, 0, -1}
end
if ARGV[5] == '1' then
  if not rank then
    redis.call('ZADD', waiters, redis.call('INCR', KEYS[4]), holder)
  end
  redis.call('ZADD', deadlines, now + ttl, holder)
  keep(waiters)
  keep(deadlines)
  keep(KEYS[4])
end
if purged > 0 then wake(holder) end
local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
local next_expiry = -1
if #first > 0 then next_expiry = tonumber(first[2]) - now end
return {0, held, ahead, next_expiry}
"""

# ARGV[4..]: holders giving back a permit or leaving the line -> permits held account-wide
RELEASE = _PRELUDE + """
purge()
for i = 4, #ARGV do
  redis.call('ZREM', leases, ARGV[i])
  redis.call('ZREM', waiters, ARGV[i])
  redis.call('ZREM', deadlines, ARGV[i])
end
wake('')
return redis.call('ZCARD', leases)
"""

# ARGV[4..]: holders whose contexts still live -> {permits held account-wide, leases re-added}
# (A holder admitted while Redis did not answer may have left a ticket behind: it waits no more.)
REFRESH = _PRELUDE + """
local purged = purge()
local added = 0
for i = 4, #ARGV do
  added = added + redis.call('ZADD', leases, now + ttl, ARGV[i])
  redis.call('ZREM', waiters, ARGV[i])
  redis.call('ZREM', deadlines, ARGV[i])
end
keep(leases)
if purged > 0 then wake('') end
return {redis.call('ZCARD', leases), added}
"""
