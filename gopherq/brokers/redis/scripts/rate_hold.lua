#!lua flags=allow-oom
-- rate_hold: hold a task until some seconds from now (key layout: lib.lua).
--
-- KEYS  [1] the hash of run-time rate limits P:{_}:rate-limits
-- ARGV  [1] task  [2] seconds
-- A later hold already there stays. Returns the hold's end, unix seconds, as text.

local field = 'hold:' .. ARGV[1]
local until_ = seconds_of(now_units()) + tonumber(ARGV[2])
local old = tonumber(redis.call('HGET', KEYS[1], field))
if old and old > until_ then
  until_ = old
end
redis.call('HSET', KEYS[1], field, num(until_))
return num(until_)
