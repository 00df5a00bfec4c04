#!lua flags=allow-oom
-- dead_letter: one dead letter of one queue, by id (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] id
-- Returns as dead_letters does for one letter (id, priority, body, attempt, reason,
-- error, died), or an empty array if the id is not a dead letter of this queue.

local q = queue(1)
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local id = ARGV[2]
local score = redis.call('ZSCORE', q.dead, id)
if not score then
  return {}
end
local out = {}
dead_fields(out, q, id, score)
return out
