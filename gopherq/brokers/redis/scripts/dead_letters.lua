#!lua flags=allow-oom
-- dead_letters: a page of one queue's dead letters, newest first (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] offset  [3] limit (> 0)
-- Returns 7 per letter: id, priority, body, attempt, reason, error, died (unix seconds).

local q = queue(1)
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local offset = tonumber(ARGV[2])
local last = offset + tonumber(ARGV[3]) - 1
local page = redis.call('ZREVRANGE', q.dead, offset, last, 'WITHSCORES')
local out = {}
for j = 1, #page, 2 do
  -- Every letter is listed, a foreign writer's too (a hash missing, not a hash, or
  -- with fields that are no numbers), as stats counts it: with what can be read.
  local f = redis.pcall('HMGET', q.msg .. page[j], 'p', 'b', 'a', 'r', 'e', 'x')
  if f.err then
    f = {}
  end
  local died = whole(f[6]) or whole(page[j + 1]) or 0
  local o = #out
  out[o + 1], out[o + 2], out[o + 3] = page[j], whole(f[1]) or DEFAULT_PRIORITY, f[2] or ''
  out[o + 4], out[o + 5] = whole(f[3] or 0) or 0, f[4] or 'DECODE_ERROR'
  out[o + 6] = f[5] or (f[2] and '' or 'broker entry has no body')
  out[o + 7] = num(seconds_of(died))
end
return out
