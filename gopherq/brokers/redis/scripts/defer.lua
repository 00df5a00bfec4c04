#!lua flags=allow-oom
-- defer: put leased messages of one queue back as scheduled, without counting an
-- attempt or the delivery (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  triples of id, token, countdown (seconds from now, by Redis TIME)
-- A countdown of 0 or less makes it ready at once, in its old place in line; else it
-- goes to the delayed zset like a retry (waking blocked reserves when it is now the
-- earliest, so they shorten their sleep), marked w: when due, tidy puts it back in its
-- old place in line, not by its eta. Returns how many were still leased.

local q = queue(1)
local now = now_units()
local first = first_score(q.delayed)
local done, ready, earlier = 0, false, false
for j = 1, #ARGV, 3 do
  local id = ARGV[j]
  if held(q, id, ARGV[j + 1]) then
    local m = q.msg .. id
    local eta = now + math.ceil(tonumber(ARGV[j + 2]) * UNITS)
    redis.call('ZREM', q.leased, id)
    redis.call('HINCRBY', m, 'd', -1)
    if eta > now then
      redis.call('HSET', m, 'st', 's', 'w', '1')
      redis.call('HDEL', m, 't')
      redis.call('ZADD', q.delayed, int(eta), id)
      earlier = earlier or not first or eta < first
    else
      make_ready(q, id, redis.call('HGET', m, 's'))
      ready = true
    end
    done = done + 1
  end
end
if earlier or (ready and not is_paused(q)) then
  wake(q)
end
return done
