#!lua flags=allow-oom
-- dead_letter: dead letters of one queue, by id (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2..] ids (the broker sends 1000 at most:
--       unpack's stack limit)
-- Returns as dead_letters does (7 per letter: id, priority, body, attempt, reason,
-- error, died), for each id that is a dead letter of this queue, in the order given;
-- an empty array if none is.

local q = queue(1)
if redis.call('EXISTS', q.dead) == 0 then -- most queues have none: no clock, no retention
  return {}
end
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local scores = redis.call('ZMSCORE', q.dead, unpack(ARGV, 2))
local out = {}
for i, score in ipairs(scores) do
  if score then
    dead_fields(out, q, ARGV[i + 1], score)
  end
end
return out
