#!lua flags=allow-oom
-- rate_keep: remember, for messages another bucket makes wait, the slot of this
-- bucket that rate_admit just answered "run now" (key layout: lib.lua).
--
-- KEYS  [1] the bucket's key base P:{rate:<key>}
-- ARGV  [1] seconds a slot is remembered past its time, then one member per
--       message: queue NUL id
-- Each is remembered as a slot due now, unless one is remembered already: asked
-- again, rate_admit answers it "run now" and claims none. Returns how many.

local bucket = rate_bucket(1)
local now = int(now_units())
local kept = 0
for j = 2, #ARGV do
  kept = kept + redis.call('ZADD', bucket.slots, 'NX', now, ARGV[j])
end
if kept > 0 and redis.call('PTTL', bucket.slots) < tonumber(ARGV[1]) * 1000 then
  redis.call('PEXPIRE', bucket.slots, math.ceil(tonumber(ARGV[1]) * 1000))
end
return kept
