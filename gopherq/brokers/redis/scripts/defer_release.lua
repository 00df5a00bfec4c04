#!lua flags=allow-oom
-- defer_release: make scheduled messages of one queue ready at once, in their old
-- place in line: those rate_release handed back (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  ids; one no longer scheduled (it ran, or went) is left alone
-- Returns how many became ready.

local q = queue(1)
local moved = {}
for _, id in ipairs(ARGV) do
  local m = q.msg .. id
  if redis.call('ZSCORE', q.delayed, id) and redis.pcall('HGET', m, 'st') == 's' then
    redis.call('HDEL', m, 'w')
    make_ready(q, id, redis.call('HGET', m, 's'))
    moved[#moved + 1] = id
  end
end
zrem_all(q.delayed, moved)
if #moved > 0 and not is_paused(q) then
  wake(q)
end
return #moved
