#!lua flags=allow-oom
-- rate_limits: read the run-time rate limits and holds; holds that ended go
-- (key layout: lib.lua).
--
-- KEYS  [1] the hash of run-time rate limits P:{_}:rate-limits
-- ARGV  none
-- Returns the hash's fields and values, as HGETALL, but for the holds that ended by
-- Redis TIME, which it deletes. A field it cannot read (a foreign writer's) stays.

local now = seconds_of(now_units())
local all = redis.call('HGETALL', KEYS[1])
local live, ended = {}, {}
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local until_ = string.sub(field, 1, 5) == 'hold:' and tonumber(value)
  if until_ and until_ <= now then
    ended[#ended + 1] = field
  else
    local n = #live
    live[n + 1], live[n + 2] = field, value
  end
end
for i = 1, #ended, BATCH do -- unpack's stack limit
  redis.call('HDEL', KEYS[1], unpack(ended, i, math.min(i + BATCH - 1, #ended)))
end
return live
