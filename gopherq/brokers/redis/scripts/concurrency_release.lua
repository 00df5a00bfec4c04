#!lua flags=allow-oom
-- concurrency_release: free the slots of settled holders of a concurrency key
-- (key layout: lib.lua, and concurrency_admit.lua).
--
-- KEYS  [1] the key's base P:{conc:<key>}
-- ARGV  the holders: token:id each (at most 1000)
-- Returns {how many still held a slot, then (when that is more than 0) the queues
-- that may have messages parked under the key, best first: queue, score, ...}. The caller wakes them queue by queue (concurrency_wake.lua), each
-- queue in its own slot.

local released = redis.call('ZREM', KEYS[1] .. ':holders', unpack(ARGV))
local out = {released}
if released > 0 then
  local queues = KEYS[1] .. ':queues'
  for _, v in ipairs(redis.call('ZRANGE', queues, 0, -1, 'WITHSCORES')) do
    out[#out + 1] = v
  end
end
return out
