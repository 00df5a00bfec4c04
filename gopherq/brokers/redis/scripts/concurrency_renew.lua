#!lua flags=allow-oom
-- concurrency_renew: renew the holder leases of running holders of a concurrency key
-- (key layout: lib.lua, and concurrency_admit.lua).
--
-- KEYS  [1] the key's base P:{conc:<key>}
-- ARGV  [1] lease seconds, then the holders: token:id each
-- Each one that still holds a slot (its lease not ended and dropped) holds it until
-- now + lease. Returns how many.

local holders = KEYS[1] .. ':holders'
local lease = tonumber(ARGV[1])
local lease_end = int(now_units() + lease * UNITS)
local kept = 0
for j = 2, #ARGV do
  if redis.call('ZSCORE', holders, ARGV[j]) then
    redis.call('ZADD', holders, lease_end, ARGV[j])
    kept = kept + 1
  end
end
if kept > 0 then
  redis.call('PEXPIRE', holders, math.ceil(lease * 1000))
end
return kept
