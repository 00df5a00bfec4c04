#!lua flags=allow-oom
-- concurrency_park: a leased message refused a concurrency slot waits, parked, in its
-- queue (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}. Besides lib.lua's keys, per concurrency key:
--         P:{q}:parked:<key>  zset    id -> ready score (priority, seq): the line
--         P:{q}:credit:<key>  string  a wake-up that found no one parked (see below)
--       and the message's hash field w: the delayed score its parking ends at.
-- ARGV  [1] id  [2] token  [3] concurrency key  [4] lease seconds
-- The message leaves its lease, its delivery uncounted, and is scheduled until now +
-- lease (so that it runs at last even if its wake-up is lost), in the key's line.
-- The slot was refused in another slot's script: a release between that refusal and
-- this park found no one to wake and left a credit, which this park takes: the
-- message is then ready at once, in its old place, instead of parked.
-- Returns 1 parked, 2 ready (credit taken), 0 if the lease was lost.

local q, id, m = unlease()
if not q then
  return 0
end
redis.call('HINCRBY', m, 'd', -1)
local f = redis.call('HMGET', m, 'p', 's')
if redis.call('DEL', KEYS[1] .. ':credit:' .. ARGV[3]) == 1 then
  make_ready(q, id, f[2])
  if not is_paused(q) then
    wake(q)
  end
  return 2
end
local now = now_units()
local parked_until = int(now + tonumber(ARGV[4]) * UNITS)
local first = first_score(q.delayed)
redis.call('HSET', m, 'st', 's', 'w', parked_until)
redis.call('HDEL', m, 't')
redis.call('ZADD', q.delayed, parked_until, id)
redis.call('ZADD', KEYS[1] .. ':parked:' .. ARGV[3], int(score(f[1], whole(f[2]) or now)), id)
if not first or tonumber(parked_until) < first then
  wake(q) -- blocked reserves shorten their sleep to the new due time
end
return 1
