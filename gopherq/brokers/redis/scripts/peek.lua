#!lua flags=allow-oom
-- peek: one message of one queue, wherever it is, after tidying it (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] id
-- Returns its state letter (as locate), priority, body and attempt, or an empty
-- array if it is not in this queue. A foreign writer's entry reads as reserve would
-- repair it (priority 2, attempt 0, body '' where unusable).

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
local id = ARGV[2]
local f = redis.pcall('HMGET', q.msg .. id, 'st', 'p', 'b', 'a')
if f.err then -- the key is not a hash
  f = {}
end
local st = state_of(q, id, f[1])
if not st then
  return {}
end
return {st, whole(f[2]) or DEFAULT_PRIORITY, f[3] or '', whole(f[4] or 0) or 0}
