#!lua flags=allow-oom
-- dead_letters: a page of one queue's dead letters, newest first (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] offset  [3] limit (> 0)
--       [4] '1': each letter's id and score only, for a page of several queues
--           (merged by score, then only its letters read: dead_letter.lua); else
--           whole letters
--       [5] a reason (optional): only letters with it, among the newest [6] letters
-- Returns 7 per letter: id, priority, body, attempt, reason, error, died (unix
-- seconds); with ARGV[4] '1', 2: id and its score in P:{q}:dead (died, in units).

local q = queue(1)
if redis.call('EXISTS', q.dead) == 0 then -- most queues have none: no clock, no retention
  return {}
end
drop_old_dead(q, now_units(), tonumber(ARGV[1]))
local offset = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local ids_only = ARGV[4] == '1'
local reason = ARGV[5]
local out = {}

if not reason then
  local page = redis.call('ZREVRANGE', q.dead, offset, offset + limit - 1, 'WITHSCORES')
  if ids_only then
    return page
  end
  for j = 1, #page, 2 do
    dead_fields(out, q, page[j], page[j + 1])
  end
  return out
end

-- By reason: the reason field is read first, the rest only for a match.
local scan = tonumber(ARGV[6])
local skip = offset
local found = 0
local step = 500
for start = 0, scan - 1, step do
  local page = redis.call('ZREVRANGE', q.dead, start, math.min(start + step, scan) - 1, 'WITHSCORES')
  for j = 1, #page, 2 do
    local r = redis.pcall('HGET', q.msg .. page[j], 'r')
    if type(r) ~= 'string' then
      r = 'DECODE_ERROR'
    end
    if r == reason then
      if skip > 0 then
        skip = skip - 1
      else
        if ids_only then
          out[#out + 1], out[#out + 2] = page[j], page[j + 1]
        else
          dead_fields(out, q, page[j], page[j + 1])
        end
        found = found + 1
        if found >= limit then
          return out
        end
      end
    end
  end
  if #page < 2 * step then
    break
  end
end
return out
