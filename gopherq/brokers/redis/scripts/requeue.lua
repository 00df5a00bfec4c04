#!lua flags=allow-oom
-- requeue: give leased messages of one queue back as ready, in their old place in
-- line (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] '1' to uncount the delivery (never started) or '0' (its worker died
--       running it), then pairs of id, token
-- Returns how many were still leased under their token.

local q = queue(1)
local uncount = ARGV[1] == '1'
local gone = {}
for j = 2, #ARGV, 2 do
  local id = ARGV[j]
  if held(q, id, ARGV[j + 1]) then
    local m = q.msg .. id
    if uncount then
      redis.call('HINCRBY', m, 'd', -1)
    end
    make_ready(q, id, redis.call('HGET', m, 's'))
    gone[#gone + 1] = id
  end
end
zrem_all(q.leased, gone)
if #gone > 0 and not is_paused(q) then
  wake(q)
end
return #gone
