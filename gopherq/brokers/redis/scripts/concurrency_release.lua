#!lua flags=allow-oom
-- concurrency_release: free the slots of settled holders of a concurrency key
-- (key layout: lib.lua, and concurrency_admit.lua).
--
-- KEYS  [1] the key's base P:{conc:<key>}
-- ARGV  the holders: token:id each (at most 1000)
-- Returns how many still held a slot.

return redis.call('ZREM', KEYS[1] .. ':holders', unpack(ARGV))
