#!lua flags=allow-oom
-- purge: delete ready and scheduled messages of one queue; leased ones stay
-- (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] most messages to delete in this call (<= 1000)
-- Returns how many were deleted; the caller calls again while that equals ARGV[2].

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
local limit = tonumber(ARGV[2])
local count = 0
for _, key in ipairs({q.ready, q.delayed}) do
  if count < limit then
    local ids = redis.call('ZRANGE', key, 0, limit - count - 1)
    for _, id in ipairs(ids) do
      forget(q, id)
    end
    zrem_all(key, ids)
    count = count + #ids
  end
end
return count
