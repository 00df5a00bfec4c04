#!lua flags=allow-oom
-- extend: renew leases of running messages of one queue (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] lease seconds, then pairs of id, token
-- Each message still leased under its token is leased until now + lease seconds.
-- Returns their ids (a worker checks this before storing job records).

local q = queue(1)
local lease_end = int(now_units() + tonumber(ARGV[1]) * UNITS)
local kept = {}
for j = 2, #ARGV, 2 do
  if held(q, ARGV[j], ARGV[j + 1]) then
    redis.call('ZADD', q.leased, lease_end, ARGV[j])
    kept[#kept + 1] = ARGV[j]
  end
end
return kept
