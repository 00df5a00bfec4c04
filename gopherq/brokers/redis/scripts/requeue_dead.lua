#!lua flags=allow-oom
-- requeue_dead: make dead letters of one queue ready again with attempt 0, at the
-- back of the line (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] 'ids' or 'all'
--       then for 'ids': the ids (at most 1000); for 'all': [3] most to look at
--       (<= 1000), oldest first, [4] how many of the oldest to pass over (those
--       earlier calls skipped)
-- Returns {moved, looked at}; ids that are not dead letters of this queue are skipped.
-- A dead letter takes its idempotency key again; one whose key another live message
-- holds meanwhile is skipped and stays a dead letter.

local q = queue(1)
local now = now_units()
tidy(q, now, tonumber(ARGV[1]))
local ids = {}
if ARGV[2] == 'all' then
  local skip = tonumber(ARGV[4])
  ids = redis.call('ZRANGE', q.dead, skip, skip + tonumber(ARGV[3]) - 1)
else
  for j = 3, #ARGV do
    ids[#ids + 1] = ARGV[j]
  end
end
local moved = {}
local seq = take_seqs(q, now, math.max(#ids, 1))
-- The live message holding key, other than id (false if none).
local function other_holder(key, id)
  local holder = key and redis.call('HGET', q.keys, key)
  if not holder or holder == id then
    return false
  end
  local st = redis.call('HGET', q.msg .. holder, 'st')
  return st and st ~= 'd' and holder
end
for _, id in ipairs(ids) do
  local m = q.msg .. id
  local key = redis.pcall('HGET', m, 'k') -- pcall: a planted key that is not a hash
  if type(key) ~= 'string' then
    key = false
  end
  if not other_holder(key, id) and redis.call('ZREM', q.dead, id) == 1 then
    drop_reasons(q, {id})
    if key then
      redis.call('HSET', q.keys, key, id)
    end
    redis.pcall('HDEL', m, 'a', 'd', 'r', 'e', 'x') -- make_ready replaces a non-hash
    make_ready(q, id, seq + #moved)
    moved[#moved + 1] = id
  end
end
if #moved > 0 and not is_paused(q) then
  wake(q)
end
return {#moved, #ids}
