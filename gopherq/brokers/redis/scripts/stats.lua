#!lua flags=allow-oom
-- stats: counts of one queue, after tidying it (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)
-- Returns {ready, scheduled, running, dead, paused (0 or 1)}; due etas and expired
-- leases that tidy left for later (beyond its batch) count as ready.

local q = queue(1)
local left, scheduled, running, dead, paused = tidy_counts(q, now_units(), tonumber(ARGV[1]))
return {redis.call('ZCARD', q.ready) + left, scheduled, running, dead, paused}
