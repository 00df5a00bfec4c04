#!lua flags=no-writes
-- dead_letters: one queue's newest dead letters with a reason (key layout: lib.lua).
-- Only reads: the letters past retention are passed over, not deleted.
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] a score in P:{q}:dead: only letters that died after it  [2] limit (> 0)
--       [3] the reason  [4] how many of the newest letters to look through at most
-- Returns 2 per letter with the reason, newest first: its id and its score in
-- P:{q}:dead (died, in units). The reasons are read from P:{q}:dead:reasons, 500
-- letters per HMGET; the letters of a page are read by the broker
-- (gopherq.brokers.redis.dead).

local q = queue(1)
local oldest = '(' .. ARGV[1]
local limit = tonumber(ARGV[2])
local reason = ARGV[3]
local scan = tonumber(ARGV[4])
local out = {}
local step = 500
for start = 0, scan - 1, step do
  local page = redis.call(
    'ZREVRANGEBYSCORE', q.dead, '+inf', oldest, 'WITHSCORES', 'LIMIT', start, math.min(step, scan - start))
  if #page == 0 then
    break
  end
  local ids = {}
  for j = 1, #page, 2 do
    ids[#ids + 1] = page[j]
  end
  local reasons = redis.call('HMGET', q.reasons, unpack(ids))
  for j = 1, #page, 2 do
    local r = reasons[(j + 1) / 2]
    if not r then -- a letter a foreign writer planted: its own hash tells
      r = redis.pcall('HGET', q.msg .. page[j], 'r')
      if type(r) ~= 'string' then
        r = 'DECODE_ERROR'
      end
    end
    if r == reason then
      out[#out + 1], out[#out + 2] = page[j], page[j + 1]
      if #out >= 2 * limit then
        return out
      end
    end
  end
  if #page < 2 * step then
    break
  end
end
return out
