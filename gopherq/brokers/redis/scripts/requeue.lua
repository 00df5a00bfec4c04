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
return give_back(q, q.leased, 2, 2, function(j, m)
  if not held(q, ARGV[j], ARGV[j + 1]) then
    return false
  end
  if uncount then
    redis.call('HINCRBY', m, 'd', -1)
  end
  return true
end)
