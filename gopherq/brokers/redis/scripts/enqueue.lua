#!lua
-- enqueue: store a batch of messages of one queue (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  5 per message: id, priority, eta (unix seconds, '' for none),
--       idempotency key ('' for none; gopherq's producers add NUL and its hold, see
--       key_and_hold), body
-- Each message stands for its own id, or for the id of the live message that already
-- holds its idempotency key (else of the finished one whose key is still held).
-- Returns, for a single message, the id it stands for; for a batch, only the
-- exceptions, as pairs of position (1-based) and id (packed by reply(), lib.lua): an
-- empty reply when every message stands for itself, the rule, saves sending back and
-- decoding a thousand ids. An id already stored is left alone.
-- A message with an eta in the future goes to the delayed zset, others to ready.
-- Wakes a blocked reserve when something became ready, or when the earliest eta moved
-- closer (so that a reserve sleeping until the old earliest eta recomputes its sleep).

local q = queue(1)
local now = now_units()
local n = #ARGV / 5
local first_seq = take_seqs(q, now, n)
local ready, delayed, earliest = {}, {}, nil
-- One EXISTS for the whole batch: then new ids (the rule) need no check each
-- (stored remembers the batch's own, for an id twice in one batch).
local names, stored = {}, {}
for i = 0, n - 1 do
  names[i + 1] = q.msg .. ARGV[i * 5 + 1]
end
local any_stored = redis.call('EXISTS', unpack(names)) > 0
local others = {} -- position, id: messages that stand for another
for i = 0, n - 1 do
  local id, priority, eta, key, body = ARGV[i * 5 + 1], ARGV[i * 5 + 2], ARGV[i * 5 + 3],
    ARGV[i * 5 + 4], ARGV[i * 5 + 5]
  local holder, hold = false, ''
  if key ~= '' then
    key, hold = key_and_hold(key)
    holder = key_holder(q, key)
  end
  if holder then
    others[#others + 1], others[#others + 2] = i + 1, holder
  else
    local m = names[i + 1]
    if not stored[m] and (not any_stored or redis.call('EXISTS', m) == 0) then
      stored[m] = true
      local at = eta ~= '' and units_from(tonumber(eta))
      if at and at > now then
        redis.call('HSET', m, 'b', body, 'p', priority, 's', int(first_seq + i), 'st', 's')
        delayed[#delayed + 1] = int(at)
        delayed[#delayed + 1] = id
        if not earliest or at < earliest then
          earliest = at
        end
      else
        redis.call('HSET', m, 'b', body, 'p', priority, 's', int(first_seq + i), 'st', 'r')
        ready[#ready + 1] = int(score(priority, first_seq + i))
        ready[#ready + 1] = id
      end
      if key ~= '' then
        redis.call('HSET', m, 'k', key)
        if hold ~= '' then
          redis.call('HSET', m, 'kh', hold)
        end
        redis.call('HSET', q.keys, key, id)
      end
    end
  end
end
if earliest then
  local first = first_score(q.delayed)
  if not first or earliest < first then
    wake(q)
  end
  zadd_all(q.delayed, delayed)
end
if #ready > 0 then
  zadd_all(q.ready, ready)
  wake(q) -- even when paused: a reserve woken for nothing drops the token and sleeps on
end
if n == 1 then
  return others[2] or ARGV[1] -- each .delay(): no packing on either side
end
return reply(others)
