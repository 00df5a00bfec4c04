#!lua flags=allow-oom
-- rename: give a leased message whose id is not UTF-8 (a foreign writer's) a new id
-- (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] id (any bytes)  [2] token  [3] new id
-- A worker's ids are text: the broker renames such a message as reserve hands it
-- out, still leased under the same token. The new id gets '.' .. token behind it if
-- a message holds it already. Returns the new id, or '' if the lease was lost.

local q = queue(1)
local id, new = ARGV[1], ARGV[3]
if not held(q, id, ARGV[2]) then
  return ''
end
if redis.call('EXISTS', q.msg .. new) == 1 then
  new = new .. '.' .. ARGV[2]
end
local lease = redis.call('ZSCORE', q.leased, id)
redis.call('RENAME', q.msg .. id, q.msg .. new)
redis.call('ZREM', q.leased, id)
redis.call('ZADD', q.leased, lease, new)
return new
