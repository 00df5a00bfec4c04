-- reserve: lease up to ARGV[1] runnable messages from one or more queues, best first
-- (key layout: lib.lua).
--
-- KEYS  the key base P:{q} of each queue (one queue per call on Redis Cluster)
-- ARGV  [1] limit (0: only tidy and report)  [2] lease seconds
--       [3] token, random per call (a message is taken at most once per call, so
--       the token tells its deliveries apart)  [4] dead-letter ttl
-- Per queue, first tidy: due etas and expired leases become ready, old dead letters go.
-- Then take the lowest scores (priority, then seq) across the unpaused queues and
-- lease each: st = l, t = token, d + 1, into the leased zset until now + lease.
-- Wake tokens: a queue left with nothing runnable loses its token (it is stale); a
-- queue left with ready messages that this call took from or refilled gets one, so
-- that the next blocked reserve wakes (a chain: one wake per batch taken).
-- Returns {moved, head, due, then 7 per delivery: id, queue index, priority, body,
-- attempt, deliveries, token} (packed by reply(), lib.lua): moved = how many became
-- ready; head = the best score still ready in an unpaused queue ('' if none); due =
-- seconds until the next eta or lease expiry of these queues ('' if none). The queue
-- index is negative when the message carries the cancel mark (field c).

local limit = tonumber(ARGV[1])
local now = now_units()
local lease_end = now + tonumber(ARGV[2]) * UNITS
local lease_text = int(lease_end) -- formatted once, not by Redis for every ZADD pair
local token = ARGV[3]
local ttl = tonumber(ARGV[4])
local n = #KEYS
local queues, paused, moved, active = {}, {}, {}, {}
local moved_total, due = 0, nil
for i = 1, n do
  local q = queue(i)
  queues[i] = q
  local next_eta, next_expiry
  moved[i], next_eta, next_expiry = tidy(q, now, ttl)
  moved_total = moved_total + moved[i]
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
if limit > 0 and #active == 1 then
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
  for j = 1, math.min(limit, #candidates) do
    local c = candidates[j]
    redis.call('ZREM', queues[c[2]].ready, c[3])
    picked[#picked + 1] = {c[2], c[3]}
  end
end

local out = {moved_total, '', ''}
local took, leases = {}, {}
for _, p in ipairs(picked) do
  local q, id = queues[p[1]], p[2]
  local m = q.msg .. id
  local f = redis.call('HMGET', m, 'b', 'p', 'a', 'd', 'c')
  if f[1] then
    local deliveries = tonumber(f[4] or 0) + 1
    -- '1' for a first delivery (the rule) costs no formatting at all.
    redis.call('HSET', m, 'st', 'l', 't', token, 'd', f[4] and int(deliveries) or '1')
    leases[p[1]] = leases[p[1]] or {}
    local l = leases[p[1]]
    l[#l + 1], l[#l + 2] = lease_text, id
    local o = #out
    local index = p[1]
    if f[5] then
      index = -index
    end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, index, tonumber(f[2]), f[1]
    out[o + 5], out[o + 6], out[o + 7] = tonumber(f[3] or 0), deliveries, token
    took[p[1]] = true
  end
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
    if took[i] or moved[i] > 0 then
      wake(q)
    end
  end
end
if head then out[2] = num(head) end
if due then out[3] = num(math.max(due - now, 0) / UNITS) end
return reply(out)
