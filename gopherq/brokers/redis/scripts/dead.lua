#!lua flags=allow-oom
-- dead: move a leased message to its queue's dead letters (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] id  [2] token  [3] reason  [4] error text  [5] dead-letter ttl (seconds)
--       [6] most dead letters kept in this queue
-- The died time is strictly after the newest dead letter's, so "newest first" is
-- exact. The idempotency key is released (the hash keeps it in k, for requeue_dead
-- to take again), so the job can be sent anew. Then retention: letters older than the ttl go, and the oldest beyond the
-- count (at most 1000 per call). Returns 1, or 0 if the lease was lost.

local q, id, m = unlease()
if not q then
  return 0
end
local now = now_units()
local newest = redis.call('ZRANGE', q.dead, -1, -1, 'WITHSCORES')
local died = now
if #newest > 0 then
  died = math.max(now, (whole(newest[2]) or now) + 1) -- a planted score may be inf
end
release_key(q, id, redis.call('HGET', m, 'k'))
redis.call('HSET', m, 'st', 'd', 'r', ARGV[3], 'e', ARGV[4], 'x', int(died))
redis.call('HDEL', m, 't', 'c')
redis.call('ZADD', q.dead, int(died), id)
redis.call('HSET', q.reasons, id, ARGV[3])
redis.call('ZADD', q.by_reason .. ARGV[3], int(died), id)
drop_old_dead(q, now, tonumber(ARGV[5]))
local over = redis.call('ZCARD', q.dead) - tonumber(ARGV[6])
if over > 0 then
  local oldest = redis.call('ZRANGE', q.dead, 0, math.min(over, BATCH) - 1)
  for _, old in ipairs(oldest) do
    forget(q, old)
  end
  drop_dead(q, oldest)
end
return 1
