#!lua flags=allow-oom
-- requeue_dead: make dead letters of one queue ready again with attempt 0, at the
-- back of the line (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] 'ids' or 'all'
--       then for 'ids': the ids (at most 1000); for 'all': [3] most to move (<= 1000),
--       oldest first
-- Returns how many moved; ids that are not dead letters of this queue are skipped.

local q = queue(1)
local now = now_units()
tidy(q, now, tonumber(ARGV[1]))
local ids = {}
if ARGV[2] == 'all' then
  ids = redis.call('ZRANGE', q.dead, 0, tonumber(ARGV[3]) - 1)
else
  for j = 3, #ARGV do
    ids[#ids + 1] = ARGV[j]
  end
end
local moved = {}
local seq = take_seqs(q, now, math.max(#ids, 1))
for _, id in ipairs(ids) do
  local m = q.msg .. id
  if redis.call('ZREM', q.dead, id) == 1 then
    redis.call('HDEL', m, 'a', 'd', 'r', 'e', 'x')
    make_ready(q, id, seq + #moved)
    moved[#moved + 1] = id
  end
end
if #moved > 0 and not is_paused(q) then
  wake(q)
end
return #moved
