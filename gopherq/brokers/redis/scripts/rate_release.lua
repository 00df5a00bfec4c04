#!lua flags=allow-oom
-- rate_release: forget one rate-limit bucket and hand back the messages that wait
-- for one of its slots (key layout: lib.lua).
--
-- KEYS  [1] the bucket's key base P:{rate:<key>}
-- ARGV  none
-- Returns the members (queue NUL id) of the slots it remembered; the caller then
-- makes those messages ready in their queues (defer_release.lua).

local bucket = rate_bucket(1)
local members = redis.call('ZRANGE', bucket.slots, 0, -1)
redis.call('DEL', bucket.tat, bucket.slots)
return members
