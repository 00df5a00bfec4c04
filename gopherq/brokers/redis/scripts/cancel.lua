#!lua flags=allow-oom
-- cancel: remove ready and scheduled messages of one queue, mark leased ones
-- (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds), then ids (at most 1000)
-- First tidy, so that due etas and expired leases count as ready. A ready or
-- scheduled message goes with its idempotency key; a leased one stays and gets the
-- cancel mark c = '1' (requeue, lease expiry and retry keep it; reserve reports it).
-- Dead letters and ids not in this queue are left alone.
-- Returns 4 per message found: id, state letter before (r, s or l), body, attempt.

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
local place = {r = q.ready, s = q.delayed}
local gone = {r = {}, s = {}}
local out = {}
for j = 2, #ARGV do
  local id = ARGV[j]
  local m = q.msg .. id
  local f = redis.pcall('HMGET', m, 'st', 'b', 'a', 'k')
  local state = state_of(q, id, f[1])
  if state == 'r' or state == 's' or state == 'l' then
    if state == 'l' then
      redis.pcall('HSET', m, 'c', '1') -- a planted key that is not a hash: expiry ends it
    else
      forget(q, id, f[4])
      local ids = gone[state]
      ids[#ids + 1] = id
    end
    local o = #out
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, state, f[2] or '', whole(f[3] or 0) or 0
  end
end
for state, ids in pairs(gone) do
  zrem_all(place[state], ids)
end
return out
