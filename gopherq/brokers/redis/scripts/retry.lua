#!lua flags=allow-oom
-- retry: schedule a leased message again with attempt + 1 (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] id  [2] token  [3] countdown (seconds from now, by Redis TIME)
-- An eta in the future puts it in the delayed zset (waking blocked reserves when it
-- is now the earliest, so they shorten their sleep); otherwise it is ready at once,
-- at the back of its priority. Returns 1, or 0 if the lease was lost.

local q, id, m = unlease()
if not q then
  return 0
end
local now = now_units()
local eta = now + math.ceil(tonumber(ARGV[3]) * UNITS)
redis.call('HINCRBY', m, 'a', 1)
redis.call('HDEL', m, 'd')
if eta > now then
  local first = first_score(q.delayed)
  redis.call('HSET', m, 'st', 's')
  redis.call('HDEL', m, 't')
  redis.call('ZADD', q.delayed, int(eta), id)
  if not first or eta < first then
    wake(q)
  end
else
  make_ready(q, id, take_seqs(q, now, 1))
  if not is_paused(q) then
    wake(q)
  end
end
return 1
