#!lua flags=allow-oom
-- concurrency_forget: drop a queue from a concurrency key's queues once a wake-up
-- there found fewer messages parked than it asked for (key layout: lib.lua, and
-- concurrency_admit.lua).
--
-- KEYS  [1] the key's base P:{conc:<key>}
-- ARGV  [1] the queue  [2] its score when the release read it
-- Kept if a refusal noted the queue again since with a better place (another score).
-- A message refused there and still on its way to its parking takes the credit
-- that wake-up left (concurrency_park.lua). Returns 1 if dropped.

local queues = KEYS[1] .. ':queues'
if tonumber(redis.call('ZSCORE', queues, ARGV[1])) == tonumber(ARGV[2]) then
  return redis.call('ZREM', queues, ARGV[1])
end
return 0
