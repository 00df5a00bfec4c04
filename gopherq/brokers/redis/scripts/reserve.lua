#!lua flags=allow-oom
-- reserve: lease up to ARGV[1] runnable messages from one or more queues, best first
-- (key layout: lib.lua).
--
-- KEYS  the key base P:{q} of each queue (one queue per call on Redis Cluster)
-- ARGV  [1] limit (0: only tidy and report)  [2] lease seconds
--       [3] token, random per call (a message is taken at most once per call, so
--       the token tells its deliveries apart)  [4] dead-letter ttl
--       then, only for an ordered reserve (gopherq.brokers.base.ReserveOrder):
--       [5] '1' strict (queues in KEYS order) or '0'  [5 + i] aging period of queue i
--       in seconds, '' for none
-- Per queue, first tidy: due etas and expired leases become ready, old dead letters go.
-- Then take the lowest scores (priority, then seq) across the unpaused queues and
-- lease each: st = l, t = token, d + 1, into the leased zset until now + lease (and
-- free its idempotency key when it is held only until the start, kh = 's'). A
-- message a foreign writer spoiled is repaired first (see repair below) and handed
-- out all the same: its worker runs it or dead-letters it with a reason.
-- Wake tokens: a queue left with nothing runnable loses its token (it is stale); an
-- unpaused queue left with ready messages keeps one, so that the next blocked reserve
-- wakes (a chain: one wake per batch taken). That holds for every queue of the call,
-- not only those it took from: the BLPOP in front may have taken the token of a queue
-- whose messages this call then left for another's better ones.
-- allow-oom: at maxmemory a reserve must still run, or nothing drains (it moves
-- messages from zset to zset; only a repaired entry grows, by a few fields).
-- Returns {moved, head, due, then 7 per delivery: id, queue index, priority, body,
-- attempt, deliveries, token} (packed by reply(), lib.lua): moved = how many became
-- ready; head = the best score still ready in an unpaused queue ('' if none; with
-- limit 0 and an order, level * 2^48 + seq of the best by that order); due =
-- seconds until the next eta or lease expiry of these queues ('' if none). The queue
-- index is negative when the message carries the cancel mark (field c).

-- A count field's text (a, d) as a number when it is one Redis takes for an integer
-- (HINCRBY: digits only) and not negative; else nil.
local function count(x)
  local n = tonumber(x)
  if n and n >= 0 and int(n) == x then
    return n
  end
  return nil
end

-- Make a spoiled message's hash m sound again (f: its HMGET fields b, p, a, d, c, kh, or
-- an error reply when m is not a hash, which goes): b '' when absent, which its
-- worker dead-letters DECODE_ERROR; p 2 when not a whole number, a and d 0 when not
-- counts, s now when not a whole number. Every later script then finds sound fields.
-- Returns f as it now is, priority, attempt and deliveries before this one.
local function repair(m, f, now)
  if f.err then
    redis.call('DEL', m)
    f = {}
  end
  local priority = whole(f[2]) or DEFAULT_PRIORITY
  local attempt, seen = f[3] and count(f[3]) or 0, f[4] and count(f[4]) or 0
  local seq = whole(redis.call('HGET', m, 's')) or now
  local body = f[1] or ''
  redis.call('HSET', m, 'b', body, 'p', int(priority), 'a', int(attempt), 'd', int(seen),
    's', int(seq))
  return {body, false, false, false, f[5], f[6]}, priority, attempt, seen
end

local limit = tonumber(ARGV[1])
local now = now_units()
local lease_end = now + tonumber(ARGV[2]) * UNITS
local lease_text = int(lease_end) -- formatted once, not by Redis for every ZADD pair
local token = ARGV[3]
local ttl = tonumber(ARGV[4])
local n = #KEYS
local queues, paused, active = {}, {}, {}
local moved_total, due = 0, nil
for i = 1, n do
  local q = queue(i)
  queues[i] = q
  local moved, next_eta, next_expiry = tidy(q, now, ttl)
  moved_total = moved_total + moved
  for _, at in ipairs({next_eta or false, next_expiry or false}) do
    if at and (not due or at < due) then
      due = at
    end
  end
  paused[i] = is_paused(q)
  if not paused[i] then
    active[#active + 1] = i
  end
end

local picked = {} -- {queue index, id}

-- Lease-to-be: the first `limit` of sorted candidates, each with its queue index at
-- c[k] and its id at c[k + 1], out of their ready zsets.
local function take_first(candidates, k)
  for j = 1, math.min(limit, #candidates) do
    local c = candidates[j]
    redis.call('ZREM', queues[c[k]].ready, c[k + 1])
    picked[#picked + 1] = {c[k], c[k + 1]}
  end
end

local aged_head = nil -- an ordered peek's head: level * 2^48 + seq of its best message
if ARGV[5] then -- an ordered reserve (its functions made only then: a plain one pays nothing)
  -- The candidates of an ordered reserve from queue i: its first `count` ready messages,
  -- as {rank, level, seq, i, id}, where rank is i when strict (else 0). With an aging
  -- period (units), the first `count` of each priority level present instead (a range
  -- read per level, the next level found by the read itself), each at its aged level
  -- max(0, priority - whole periods waited) (gopherq.brokers.base.aged): within a level
  -- line order is seq order, so the queue's best are among them.
  local function candidates_of(out, i, strict, period, count)
    local ready, rank = queues[i].ready, strict and i or 0
    local from = '-inf'
    while true do
      local head = redis.call('ZRANGEBYSCORE', ready, from, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
      if #head == 0 then
        return
      end
      local upper = nil
      for j = 1, #head, 2 do
        local s = tonumber(head[j + 1])
        local p = math.floor(s / PRIORITY_STEP)
        if not period then
          out[#out + 1] = {rank, p, s - p * PRIORITY_STEP, i, head[j]}
        elseif upper and s >= upper then
          break
        else
          upper = upper or (p + 1) * PRIORITY_STEP
          local seq = s - p * PRIORITY_STEP
          local level = math.max(0, p - math.max(0, math.floor((now - seq) / period)))
          out[#out + 1] = {rank, level, seq, i, head[j]}
        end
      end
      if not period or not upper or upper ~= upper or upper == math.huge then
        return -- one read without aging; a foreign writer's score (inf, nan) ends it too
      end
      from = int(upper)
    end
  end

  -- An ordered reserve's candidates from the active queues (`count` of each).
  local function ordered_candidates(count)
    local candidates, strict = {}, ARGV[5] == '1'
    for _, i in ipairs(active) do
      local period = tonumber(ARGV[5 + i])
      candidates_of(candidates, i, strict, period and period * UNITS, count)
    end
    table.sort(candidates, function(a, b)
      for k = 1, 4 do
        if a[k] ~= b[k] then return a[k] < b[k] end
      end
      return a[5] < b[5]
    end)
    return candidates
  end

  if limit == 0 then
    local best = ordered_candidates(1)[1]
    aged_head = best and best[2] * PRIORITY_STEP + best[3]
  else
    take_first(ordered_candidates(limit), 4)
  end
elseif limit > 0 and #active == 1 then
  -- Not ZPOPMIN: it returns the scores, each formatted with printf (half its cost).
  local ready = queues[active[1]].ready
  local ids = redis.call('ZRANGE', ready, 0, limit - 1)
  if #ids > 0 then
    redis.call('ZREMRANGEBYRANK', ready, 0, #ids - 1)
  end
  for _, id in ipairs(ids) do
    picked[#picked + 1] = {active[1], id}
  end
elseif limit > 0 and #active > 1 then
  local candidates = {}
  for _, i in ipairs(active) do
    local head = redis.call('ZRANGE', queues[i].ready, 0, limit - 1, 'WITHSCORES')
    for j = 1, #head, 2 do
      candidates[#candidates + 1] = {tonumber(head[j + 1]), i, head[j]}
    end
  end
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  take_first(candidates, 2)
end

local out = {moved_total, '', ''}
local leases = {}
for _, p in ipairs(picked) do
  local q, id = queues[p[1]], p[2]
  local m = q.msg .. id
  local f = redis.pcall('HMGET', m, 'b', 'p', 'a', 'd', 'c', 'kh') -- pcall: see repair
  -- Checked inline, with no call in the common case (a and d absent): every message.
  local priority, attempt, seen = tonumber(f[2]), 0, 0
  if f[3] then attempt = count(f[3]) end
  if f[4] then seen = count(f[4]) end
  if not (f[1] and priority and attempt and seen) or priority % 1 ~= 0
    or priority >= WHOLE or priority <= -WHOLE then
    f, priority, attempt, seen = repair(m, f, now)
  end
  if f[6] == 's' then -- unique_until="start": the key is free once the task starts
    release_key(q, id, redis.call('HGET', m, 'k'))
    redis.call('HDEL', m, 'k', 'kh')
  end
  local deliveries = seen + 1
  -- '1' for a first delivery (the rule) costs no formatting at all.
  redis.call('HSET', m, 'st', 'l', 't', token, 'd', seen > 0 and int(deliveries) or '1')
  leases[p[1]] = leases[p[1]] or {}
  local l = leases[p[1]]
  l[#l + 1], l[#l + 2] = lease_text, id
  local o = #out
  local index = p[1]
  if f[5] then
    index = -index
  end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, index, priority, f[1]
  out[o + 5], out[o + 6], out[o + 7] = attempt, deliveries, token
end
for i, batch in pairs(leases) do
  zadd_all(queues[i].leased, batch)
  if not due or lease_end < due then
    due = lease_end
  end
end

local head = nil
for i = 1, n do
  local q = queues[i]
  local first = first_score(q.ready)
  if not first or paused[i] then
    redis.call('DEL', q.wake)
  else
    if not head or first < head then
      head = first
    end
    wake(q)
  end
end
head = aged_head or head
if head then out[2] = num(head) end
if due then out[3] = num(math.max(due - now, 0) / UNITS) end
return reply(out)
