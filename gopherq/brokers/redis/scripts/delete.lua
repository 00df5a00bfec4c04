#!lua flags=allow-oom
-- delete: remove one message of one queue wherever it is (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] id
-- A leased message's lease goes stale. Returns 1 if the message was in this queue.

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
local id = ARGV[2]
if not state_of(q, id, redis.pcall('HGET', q.msg .. id, 'st')) then
  return 0
end
for _, place in ipairs({q.ready, q.delayed, q.leased, q.dead}) do
  redis.call('ZREM', place, id) -- every place: a planted id may be in several
end
drop_reasons(q, {id})
forget(q, id)
return 1
