#!lua flags=allow-oom
-- concurrency_admit: make a delivery a holder of a concurrency key, if there is room
-- (key layout: lib.lua, and the key below).
--
-- KEYS  [1] the key's base P:{conc:<key>} (a slot of its own: the limit holds across
--       queues). Its one key:
--         P:{conc:<key>}:holders  zset  token:id -> holder lease end (units)
--       The zset lives as long as its last holder lease (PEXPIRE on every add).
-- ARGV  [1] limit  [2] lease seconds  [3] the holder: token:id
-- Holders whose lease ended no longer count and go. The holder is added (or its lease
-- renewed, if it holds already) when fewer than limit hold the key.
-- Returns {1 if admitted else 0, how many parked messages to wake for the slots that
-- ended leases freed and this admit did not take}.

local holders = KEYS[1] .. ':holders'
local now = now_units()
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local expired = redis.call('ZREMRANGEBYSCORE', holders, '-inf', int(now))
local mine = redis.call('ZSCORE', holders, ARGV[3])
local count = redis.call('ZCARD', holders)
if not mine and count >= limit then
  return {0, 0}
end
redis.call('ZADD', holders, int(now + lease * UNITS), ARGV[3])
redis.call('PEXPIRE', holders, math.ceil(lease * 1000))
if not mine then
  count = count + 1
end
return {1, math.max(math.min(expired, limit - count), 0)}
