#!lua flags=allow-oom
-- concurrency_admit: make a delivery a holder of a concurrency key, if there is room
-- (key layout: lib.lua, and the keys below).
--
-- KEYS  [1] the key's base P:{conc:<key>} (a slot of its own: the limit holds across
--       queues). Its keys:
--         P:{conc:<key>}:holders  zset  token:id -> holder lease end (units)
--         P:{conc:<key>}:queues   zset  queue -> priority * 2^48 + units: the queues
--                                 that may have messages parked under the key, by
--                                 the best place a refusal there noted (priority,
--                                 then time)
--       holders lives as long as its last holder lease, queues two leases past its
--       last refusal (PEXPIRE on every add): by then every parking it notes has ended.
-- ARGV  [1] limit  [2] lease seconds  [3] the holder: token:id  [4] its queue
--       [5] its priority
-- Holders whose lease ended no longer count and go. The holder is added (or its lease
-- renewed, if it holds already) when fewer than limit hold the key; else its queue is
-- noted in queues, before its message is parked there (concurrency_park.lua), so that
-- a release from now on wakes it (concurrency_wake.lua).
-- Returns {1 if admitted else 0, how many parked messages to wake for the slots that
-- ended leases freed and this admit did not take, then (when that is more than 0)
-- the queues to wake them in, best first: queue, score, ...}.

local holders = KEYS[1] .. ':holders'
local queues = KEYS[1] .. ':queues'
local now = now_units()
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local expired = redis.call('ZREMRANGEBYSCORE', holders, '-inf', int(now))
local mine = redis.call('ZSCORE', holders, ARGV[3])
local count = redis.call('ZCARD', holders)
if not mine and count >= limit then
  local place = score(ARGV[5], now)
  local noted = tonumber(redis.call('ZSCORE', queues, ARGV[4]))
  if not noted or place < noted then
    redis.call('ZADD', queues, int(place), ARGV[4])
  end
  redis.call('PEXPIRE', queues, math.ceil(lease * 2000))
  return {0, 0}
end
redis.call('ZADD', holders, int(now + lease * UNITS), ARGV[3])
redis.call('PEXPIRE', holders, math.ceil(lease * 1000))
if not mine then
  count = count + 1
end
local out = {1, math.max(math.min(expired, limit - count), 0)}
if out[2] > 0 then
  for _, v in ipairs(redis.call('ZRANGE', queues, 0, -1, 'WITHSCORES')) do
    out[#out + 1] = v
  end
end
return out
