#!lua flags=allow-oom
-- stats: counts of one queue, after tidying it (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)
-- Returns {ready, scheduled, running, dead, paused (0 or 1)}; due etas and expired
-- leases that tidy left for later (beyond its batch) count as ready.

local q = queue(1)
local now = now_units()
tidy(q, now, tonumber(ARGV[1]))
local due = redis.call('ZCOUNT', q.delayed, '-inf', int(now))
local expired = redis.call('ZCOUNT', q.leased, '-inf', int(now))
return {
  redis.call('ZCARD', q.ready) + due + expired,
  redis.call('ZCARD', q.delayed) - due,
  redis.call('ZCARD', q.leased) - expired,
  redis.call('ZCARD', q.dead),
  redis.call('EXISTS', q.paused),
}
