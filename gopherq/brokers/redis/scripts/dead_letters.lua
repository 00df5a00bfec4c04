-- dead_letters: a page of one queue's dead letters, newest first (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] offset  [3] limit (> 0)
-- Returns 7 per letter: id, priority, body, attempt, reason, error, died (unix seconds).

local q = queue(1)
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local offset = tonumber(ARGV[2])
local page = redis.call('ZREVRANGE', q.dead, offset, offset + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(page) do
  local f = redis.call('HMGET', q.msg .. id, 'p', 'b', 'a', 'r', 'e', 'x')
  if f[2] then
    local o = #out
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, tonumber(f[1]), f[2], tonumber(f[3] or 0)
    out[o + 5], out[o + 6], out[o + 7] = f[4] or '', f[5] or '', num(seconds_of(tonumber(f[6])))
  end
end
return out
