#!lua
-- enqueue: store a batch of messages of one queue (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
--       [2] its fair-key counters P:{q}:fair, given only when the batch carries fair keys
-- ARGV  5 per message: id, priority, eta (unix seconds, '' for none),
--       idempotency key ('' for none; gopherq's producers add NUL and its hold, see
--       key_and_hold), body; with KEYS[2], a 6th: fair key ('' for none)
-- Each message stands for its own id, or for the id of the live message that already
-- holds its idempotency key (else of the finished one whose key is still held).
-- Returns, for a single message, the id it stands for; for a batch, only the
-- exceptions, as pairs of position (1-based) and id (packed by reply(), lib.lua): an
-- empty reply when every message stands for itself, the rule, saves sending back and
-- decoding a thousand ids. An id already stored is left alone.
-- A message with an eta in the future goes to the delayed zset, others to ready.
-- Wakes a blocked reserve when something became ready, or when the earliest eta moved
-- closer (so that a reserve sleeping until the old earliest eta recomputes its sleep).
-- A message made ready with a fair key takes its place by the key's counter (fair_seq
-- below; gopherq/brokers/base.py, "Fair keys"), others by seq.

local q = queue(1)
local now = now_units()
local fair = KEYS[2]
local width = fair and 6 or 5
local n = #ARGV / width
local first_seq = take_seqs(q, now, n)

-- Fair keys: member '<priority>:<key>' of the fair zset, scored priority * 2^48 + the
-- seq its key's next message takes at the least. Per priority, the first call of a
-- batch finds the head (the seq of the first ready message, now if none) and drops
-- the counters it passed (all of them when the line is empty), so the zset holds
-- about the keys with ready messages. counters holds the batch's changes, stored last.
-- (Defined only with fair keys, and without lib.lua's whole(): a call without them
-- pays for no closure or table.)
local fair_seq, counters
if fair then
  local heads = {}
  counters = {}
  fair_seq = function(priority, key)
    local base = score(priority, 0)
    local head = heads[base]
    if not head then
      local upper = '(' .. int(base + PRIORITY_STEP)
      local first = redis.call('ZRANGEBYSCORE', q.ready, int(base), upper, 'WITHSCORES', 'LIMIT', 0, 1)
      head = tonumber(first[2]) -- a score of its priority's range: finite
      if head then
        head = math.floor(head - base)
        redis.call('ZREMRANGEBYSCORE', fair, int(base), int(base + head))
      else
        head = now
        redis.call('ZREMRANGEBYSCORE', fair, int(base), upper)
      end
      heads[base] = head
    end
    local member = int(base / PRIORITY_STEP) .. ':' .. key
    local next_score = counters[member] or tonumber(redis.call('ZSCORE', fair, member))
    local seq = head
    if next_score and next_score - base > head and next_score - base < PRIORITY_STEP then
      seq = math.floor(next_score - base)
    end
    counters[member] = base + seq + 1
    return seq
  end
end
local ready, delayed, earliest = {}, {}, nil
-- One EXISTS for the whole batch: then new ids (the rule) need no check each
-- (stored remembers the batch's own, for an id twice in one batch).
local names, stored = {}, {}
for i = 0, n - 1 do
  names[i + 1] = q.msg .. ARGV[i * width + 1]
end
local any_stored = redis.call('EXISTS', unpack(names)) > 0
local others = {} -- position, id: messages that stand for another
for i = 0, n - 1 do
  local o = i * width -- offset of its fields in ARGV
  local id, priority, eta, key, body = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3],
    ARGV[o + 4], ARGV[o + 5]
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
        local seq = first_seq + i
        if fair and ARGV[o + 6] ~= '' then
          seq = fair_seq(priority, ARGV[o + 6])
        end
        redis.call('HSET', m, 'b', body, 'p', priority, 's', int(seq), 'st', 'r')
        ready[#ready + 1] = int(score(priority, seq))
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
if fair then
  local moved = {}
  for member, next_score in pairs(counters) do
    moved[#moved + 1], moved[#moved + 2] = int(next_score), member
  end
  zadd_all(fair, moved)
end
if #ready > 0 then
  zadd_all(q.ready, ready)
  wake(q) -- even when paused: a reserve woken for nothing drops the token and sleeps on
end
if n == 1 then
  return others[2] or ARGV[1] -- each .delay(): no packing on either side
end
return reply(others)
