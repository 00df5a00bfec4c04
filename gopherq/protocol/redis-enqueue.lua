#!lua
-- lib.lua: helpers for the other scripts in this directory. Each script gets this
-- opening comment and the definitions it uses, directly or through others (see
-- script() in connection.py), so a definition may use only those above it.
--
-- Key layout. Every key of queue q carries the hash tag {q}, so a script on one
-- queue touches one hash slot (Redis Cluster). P is the prefix (default "gq"):
--
--   P:{q}:ready    zset    id -> priority * 2^48 + seq    ready, in line order
--   P:{q}:delayed  zset    id -> eta (units)              scheduled: eta or retry backoff
--   P:{q}:leased   zset    id -> lease end (units)        reserved by a worker
--   P:{q}:dead     zset    id -> died (units)             dead letters
--   P:{q}:dead:reasons  hash  id -> reason, of each dead letter (a letter missing
--                          here, a foreign writer's, has its reason in its hash, r)
--   P:{q}:dead:r:<reason>  zset  id -> died (units): the dead letters with that reason
--                          (complete while the hash has as many ids as P:{q}:dead)
--   P:{q}:keys     hash    idempotency key -> id of the live message holding it
--   P:{q}:keys:<key>  string  id of the finished message whose key is held past its
--                          ack, expiring (PX) when the hold ends
--   P:{q}:seq      string  the last seq handed out
--   P:{q}:fair     zset    '<priority>:<fair key>' -> priority * 2^48 + the key's next seq
--   P:{q}:paused   string  present while the queue is paused
--   P:{q}:wake     list    at most one token, "there may be work": blocked reserves BLPOP it
--   P:{q}:m:<id>   hash    one message: b body, p priority, a attempt, d deliveries
--                          (a and d absent means 0), s seq,
--                          st state (r ready, s scheduled, l leased, d dead),
--                          t token (while leased), k idempotency key,
--                          kh how long k is held: ms past the ack, or 's' to free
--                          it at reserve (absent: freed at the ack),
--                          r reason, e error, x died in units (while dead),
--                          c '1' once cancel found it leased (requeue, expiry, retry keep it),
--                          w '1' while defer has it scheduled: due, it goes back in line at s
--
-- Rate limits (gopherq/limits.py), each bucket in a slot of its own:
--
--   P:{rate:<key>}:tat    string  a rate-limit bucket's theoretical arrival time (units,
--                                 GCRA: gopherq/limits.py); a slot of its own per bucket
--   P:{rate:<key>}:slots  zset    queue NUL id -> slot (units): messages put back to wait
--                                 for their slot, which they do not pay again
--   P:{_}:rate-limits     hash    rate:<task> -> "rate burst" set at run time,
--                                 hold:<task> -> unix seconds the task is held until
--                                 (rate_limits drops it once past)
--
-- A message entry a foreign writer planted or spoiled (an id in a zset with no hash,
-- a key that is not a hash, a hash with no b, fields that are not whole numbers) is
-- never an error: tidy puts it in line like any other (an id with no hash as a stub
-- hash) and reserve repairs its hash (b '' if none, p 2, a and d 0 when unusable)
-- and hands it out, so that its worker runs it or dead-letters it with a reason.
--
-- Concurrency limits (scripts concurrency_*.lua; gopherq/brokers/redis/concurrency.py):
--
--   P:{q}:parked:<key>      zset    id -> ready score: messages parked under a key, in line
--   P:{q}:credit:<key>      string  a wake-up that found none parked, kept a moment
--   P:{conc:<key>}:holders  zset    token:id -> holder lease end (units); a slot of its own
--   P:{conc:<key>}:queues   zset    queue -> score: queues that may hold parked messages
--   and while a message is parked, its hash field w: the delayed score its parking ends at.
--
-- The result backend (gopherq/results/redis.py; scripts result_*.lua) keeps, per id:
--
--   P:result:{id}        string  the job record (msgpack); expires once finished
--   P:result:{id}:done   list    one completion token (the record when small) that
--                                every waiter BLMOVEs in place; lives a minute at most
--   P:{_}:result-expiry  zset    id -> expiry time, for counting what expired
--
-- and, for the job history, in one hash slot of their own (base P:{jobs}):
--
--   P:{jobs}:index       zset    id -> created (its first store time when unset): every id
--   P:{jobs}:s:<state>   zset    the same entries, of the records in that state
--   P:{jobs}:t:<task>    zset    ... of that task's records
--   P:{jobs}:q:<queue>   zset    ... of that queue's records
--   P:{jobs}:where       hash    id -> state NUL task NUL queue: the indexes it is in
--   P:{jobs}:indexed     string  set once the records stored before these indexes
--                                existed are in them (the lazy backfill)
--   P:once:{key}         string  a done-marker of gopherq.once, until its time to live
--
-- Script flags (Redis 7 shebang, each script's first line; script() in connection.py
-- keeps it first): every script that drains, settles, gives back, dead-letters,
-- tidies or resumes is allow-oom, so that at maxmemory under noeviction the workers
-- still take, finish and free what is stored (those scripts move messages between
-- places or delete them; only a repaired entry or a dead letter's error text grows).
-- enqueue has no flags: Redis refuses it whole at maxmemory (OOM), nothing written.
-- cancel_requested and dead_letters only read (no-writes). The result scripts have no shebang: Redis
-- refuses their first write that may grow memory (a job record) at maxmemory.
-- Redis before 7 reads no shebang: Connection.load_scripts then loads them without.
--
-- Scripts get one KEYS entry per queue: its base P:{q} (every key above is the
-- base plus a suffix, all in the base's slot; declaring the base routes the call
-- on a cluster). Times are units: whole 10 us steps since 2024-01-01, from Redis
-- TIME, never a client's clock (etas come from clients as unix seconds and are
-- rounded up, so nothing is due early). Integer scores matter: Redis formats and
-- parses a fractional score with printf and strtod on every insert into a small
-- zset, which made the leased zset's ZADD cost three times as much. A seq is a time
-- in units that only grows within a queue, so line order within a priority is
-- enqueue order (due etas and expired leases go back in line by their eta and their
-- old seq) and is comparable across queues. The score keeps priority 0..31 exact
-- (priority dominates, then seq).

local PRIORITY_STEP = 281474976710656 -- 2^48
local EPOCH = 1704067200 -- 2024-01-01T00:00:00Z
local UNITS = 100000 -- units per second
local BATCH = 1000 -- most messages one tidy step moves from each place
local DEFAULT_PRIORITY = 2 -- of a message whose p is unusable (gopherq.message's default)
local WHOLE = 9007199254740992 -- 2^53: whole numbers below it are exact

local function now_units()
  local t = redis.call('TIME')
  return (tonumber(t[1]) - EPOCH) * UNITS + math.floor(tonumber(t[2]) / 10)
end

-- Unix seconds (a client's eta) as units, rounded up; and units as unix seconds.
local function units_from(seconds)
  return math.ceil((seconds - EPOCH) * UNITS)
end

local function int(x)
  return string.format('%d', x)
end

-- A field's text (or a number) as a whole number, or nil if it is none (absent,
-- text, a fraction, inf, nan, beyond 2^53): how the scripts read what a foreign
-- writer may have put in a message's hash or a zset score.
local function queue(i)
  local base = KEYS[i]
  return {
    ready = base .. ':ready', delayed = base .. ':delayed', leased = base .. ':leased',
    dead = base .. ':dead', reasons = base .. ':dead:reasons', by_reason = base .. ':dead:r:',
    keys = base .. ':keys', seq = base .. ':seq', paused = base .. ':paused',
    wake = base .. ':wake', msg = base .. ':m:',
  }
end

local function take_seqs(q, now, n)
  local first = now
  local last = tonumber(redis.call('SET', q.seq, int(first + n - 1), 'GET') or 0) or 0
  if last >= first and last < WHOLE then -- a foreign writer's seq may be text or inf
    first = last + 1
    redis.call('SET', q.seq, int(first + n - 1))
  end
  return first
end

local function score(priority, seq)
  local p = tonumber(priority)
  if not p or p % 1 ~= 0 then -- text, a fraction, inf or nan: a foreign writer's
    p = DEFAULT_PRIORITY
  end
  p = math.min(math.max(p, 0), 31)
  return p * PRIORITY_STEP + seq
end

local function wake(q)
  if redis.call('LLEN', q.wake) == 0 then
    redis.call('LPUSH', q.wake, '1')
  end
end

local function zadd_all(key, pairs)
  for i = 1, #pairs, 2 * BATCH do
    redis.call('ZADD', key, unpack(pairs, i, math.min(i + 2 * BATCH - 1, #pairs)))
  end
end

-- Put a message in line as ready at seq (now if seq is no whole number). A hash gone
-- (or a key that is not a hash) comes back as a stub, which reserve repairs (see the
-- layout above): a message that went into a zset ends run or dead-lettered.
local function key_and_hold(arg)
  local key, hold = string.match(arg, '^(.*)%z([^%z]*)$')
  if key then
    return key, hold
  end
  return arg, ''
end

-- The id holding key: the live message's, else the finished one's; false if none.
local function key_holder(q, key)
  local holder = redis.call('HGET', q.keys, key)
  local st = holder and redis.call('HGET', q.msg .. holder, 'st')
  if holder and st and st ~= 'd' then
    return holder
  end -- else none, or a stale entry: its message is gone, or dead
  return redis.call('GET', q.keys .. ':' .. key)
end

-- Delete a message's hash and its idempotency key (the caller removes it from its zset).
-- key: the hash's k field when the caller has read it already (false: none).
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2])
end

-- Due etas and expired leases become ready, dead letters older than ttl go (now in
-- units, ttl in seconds). Returns how many messages became ready, then the next eta
-- and the next lease expiry still ahead, in units (nil if none). Nothing due (the
-- common case) costs one call per zset: its first score is the next time to report.
local function reply(t)
  if rawget(_G, 'cmsgpack') then
    return cmsgpack.pack(t)
  end
  return t
end

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
