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
local f = redis.pcall('HMGET', q.msg .. id, 'p', 'b', 'a', 'r', 'e', 'x')
if f.err then
  f = {}
end
local died = whole(f[6]) or whole(score) or 0
return {
  id, whole(f[1]) or DEFAULT_PRIORITY, f[2] or '', whole(f[3] or 0) or 0,
  f[4] or 'DECODE_ERROR', f[5] or (f[2] and '' or 'broker entry has no body'),
  num(seconds_of(died)),
}
