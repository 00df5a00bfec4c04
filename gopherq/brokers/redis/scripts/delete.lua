-- delete: remove one message of one queue wherever it is (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] id
-- A leased message's lease goes stale. Returns 1 if the message was in this queue.

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
local id = ARGV[2]
local state = redis.call('HGET', q.msg .. id, 'st')
if not state then
  return 0
end
local place = {r = q.ready, s = q.delayed, l = q.leased, d = q.dead}
redis.call('ZREM', place[state], id)
forget(q, id)
return 1
