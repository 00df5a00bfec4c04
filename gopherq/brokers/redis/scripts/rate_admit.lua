#!lua flags=allow-oom
-- rate_admit: claim a slot of one rate-limit bucket for each message (GCRA, see
-- gopherq/limits.py; key layout: lib.lua).
--
-- KEYS  [1] the bucket's key base P:{rate:<key>}
-- ARGV  [1] interval (seconds between slots)  [2] burst  [3] seconds a claimed slot
--       is remembered past its time, then one member per message: queue NUL id
-- Per message: a slot remembered for it (it was put back to wait for it) is taken
-- back and answered, claiming none; else it claims max(tat, now) - (burst - 1) *
-- interval and tat moves one interval on. A slot ahead of now is remembered.
-- Returns, per message, the seconds until its slot (0: run now). allow-oom: the
-- workers must drain limited tasks at maxmemory too (a few bytes per waiting message).

local bucket = rate_bucket(1)
local now = now_units()
local interval = tonumber(ARGV[1]) * UNITS
local tolerance = (tonumber(ARGV[2]) - 1) * interval
redis.call('ZREMRANGEBYSCORE', bucket.slots, '-inf', '(' .. int(now - tonumber(ARGV[3]) * UNITS))
local tat = tonumber(redis.call('GET', bucket.tat)) or 0
local claimed = false
local out = {}
for j = 4, #ARGV do
  local member = ARGV[j]
  local slot = tonumber(redis.call('ZSCORE', bucket.slots, member))
  if slot then
    redis.call('ZREM', bucket.slots, member)
  else
    tat = math.max(tat, now)
    slot = math.ceil(tat - tolerance)
    tat = tat + interval
    claimed = true
  end
  if slot > now then
    redis.call('ZADD', bucket.slots, int(slot), member)
  end
  out[#out + 1] = num(math.max(slot - now, 0) / UNITS)
end
if claimed then
  -- An idle bucket goes once its last slot is as old as slots are remembered.
  local idle = math.ceil((tat - now) / UNITS * 1000 + tonumber(ARGV[3]) * 1000)
  redis.call('SET', bucket.tat, num(tat), 'PX', idle)
  redis.call('PEXPIRE', bucket.slots, idle)
end
return out
