#!lua flags=allow-oom
-- purge_dead: delete dead letters of one queue, oldest first (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] most to delete in this call (<= 1000)
-- Returns how many were deleted (old ones dropped by the ttl first do not count).

local q = queue(1)
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local ids = redis.call('ZRANGE', q.dead, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  forget(q, id)
end
drop_dead(q, ids)
return #ids
