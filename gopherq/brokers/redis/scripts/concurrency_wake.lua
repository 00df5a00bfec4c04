#!lua flags=allow-oom
-- concurrency_wake: make the first messages parked under a concurrency key ready again,
-- in their old place in line (key layout: lib.lua and concurrency_park.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] concurrency key  [2] how many to wake  [3] credit time to live (ms)
-- An entry whose message left its parking (woken at its end, cancelled, deleted,
-- purged: not scheduled at its w any more) is dropped; at most BATCH entries are
-- looked at. Fewer woken than asked leaves a credit for a message on its way to
-- being parked (see concurrency_park.lua), living ARGV[3] ms.
-- Returns how many were woken.

local q = queue(1)
local line = KEYS[1] .. ':parked:' .. ARGV[1]
local want = tonumber(ARGV[2])
local woken, looked = 0, 0
while woken < want and looked < BATCH do
  local first = redis.call('ZRANGE', line, 0, 0)
  if #first == 0 then
    break
  end
  local id = first[1]
  redis.call('ZREM', line, id)
  looked = looked + 1
  local m = q.msg .. id
  local f = redis.pcall('HMGET', m, 'st', 'w', 's')
  if not f.err and f[1] == 's' and f[2]
    and tonumber(redis.call('ZSCORE', q.delayed, id)) == tonumber(f[2]) then
    redis.call('ZREM', q.delayed, id)
    redis.call('HDEL', m, 'w')
    make_ready(q, id, f[3])
    woken = woken + 1
  end
end
if woken < want then
  redis.call('SET', KEYS[1] .. ':credit:' .. ARGV[1], '1', 'PX', ARGV[3])
end
if woken > 0 and not is_paused(q) then
  wake(q)
end
return woken
