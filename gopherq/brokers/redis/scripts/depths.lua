#!lua flags=allow-oom
-- depths: one queue as a monitoring scrape sees it, after tidying it as stats does
-- (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)
-- Returns {scheduled, running, dead, paused (0 or 1), age of the oldest ready message in
-- units (-1 when none is ready), then pairs of priority and ready count}.
--
-- A ready score is priority * 2^48 + seq, so each priority is one score range: one
-- ZRANGEBYSCORE ... LIMIT 0 1 finds the next priority present and its oldest message
-- (the first of its range), one ZCOUNT counts it. Two calls per priority present,
-- whatever the queue's length. Due etas and expired leases that tidy left for later
-- (beyond its batch) count as ready at the default priority, as old as the first eta.

local q = queue(1)
local now = now_units()
local left, scheduled, running, dead, paused = tidy_counts(q, now, tonumber(ARGV[1]))
local out = {scheduled, running, dead, paused, -1}
local oldest = nil
local from = '-inf'
while true do
  local first = redis.call('ZRANGEBYSCORE', q.ready, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if not first[2] then
    break
  end
  local s = whole(first[2])
  if not s then -- a foreign writer's score (a fraction, beyond 2^53): the rest as default
    out[#out + 1] = DEFAULT_PRIORITY
    out[#out + 1] = redis.call('ZCOUNT', q.ready, from, '+inf')
    break
  end
  local p = math.floor(s / PRIORITY_STEP)
  local upper = int((p + 1) * PRIORITY_STEP)
  out[#out + 1] = p
  out[#out + 1] = redis.call('ZCOUNT', q.ready, int(p * PRIORITY_STEP), '(' .. upper)
  local seq = s - p * PRIORITY_STEP
  if not oldest or seq < oldest then
    oldest = seq
  end
  from = upper
end
if left > 0 then
  out[#out + 1] = DEFAULT_PRIORITY
  out[#out + 1] = left
  local eta = first_score(q.delayed)
  if eta and eta <= now and (not oldest or eta < oldest) then
    oldest = eta
  end
end
if oldest then
  out[5] = math.max(now - oldest, 0)
end
return out
