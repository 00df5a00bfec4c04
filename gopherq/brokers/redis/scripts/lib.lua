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

local function seconds_of(units)
  return EPOCH + units / UNITS
end

-- Numbers as exact decimal strings, for text a script builds or returns (Lua's own
-- conversion keeps 14 digits). Redis formats a number argument of redis.call
-- exactly too, but with printf's floating-point path (%.17g), which cost a fifth
-- of a batch enqueue's time: integers (times, seqs, scores, counts) go to Redis as
-- int() text, formatted as integers.
local function num(x)
  return string.format('%.17g', x)
end

local function int(x)
  return string.format('%d', x)
end

-- A field's text (or a number) as a whole number, or nil if it is none (absent,
-- text, a fraction, inf, nan, beyond 2^53): how the scripts read what a foreign
-- writer may have put in a message's hash or a zset score.
local function whole(x)
  local n = tonumber(x)
  if n and n % 1 == 0 and n > -WHOLE and n < WHOLE then -- n % 1: nan for inf and nan
    return n
  end
  return nil
end

local function queue(i)
  local base = KEYS[i]
  return {
    ready = base .. ':ready', delayed = base .. ':delayed', leased = base .. ':leased',
    dead = base .. ':dead', reasons = base .. ':dead:reasons', by_reason = base .. ':dead:r:',
    keys = base .. ':keys', seq = base .. ':seq', paused = base .. ':paused',
    wake = base .. ':wake', msg = base .. ':m:',
  }
end

local function rate_bucket(i)
  local base = KEYS[i]
  return {tat = base .. ':tat', slots = base .. ':slots'}
end

-- Reserve n seqs; returns the first. One call unless seqs ran ahead of the clock
-- (a big batch just now): SET ... GET writes and reads the last seq at once.
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

local function is_paused(q)
  return redis.call('EXISTS', q.paused) == 1
end

local function wake(q)
  if redis.call('LLEN', q.wake) == 0 then
    redis.call('LPUSH', q.wake, '1')
  end
end

local function zrem_all(key, ids) -- at most BATCH ids (unpack's stack limit)
  if #ids > 0 then
    redis.call('ZREM', key, unpack(ids))
  end
end

-- Take ids (at most BATCH) out of the reasons of q's dead letters.
local function drop_reasons(q, ids)
  if #ids == 0 then
    return
  end
  local reasons = redis.call('HMGET', q.reasons, unpack(ids))
  for i = 1, #ids do
    if reasons[i] then
      redis.call('ZREM', q.by_reason .. reasons[i], ids[i])
    end
  end
  redis.call('HDEL', q.reasons, unpack(ids))
end

-- Take dead letters ids (at most BATCH) out of q's dead letters and their reasons.
local function drop_dead(q, ids)
  zrem_all(q.dead, ids)
  drop_reasons(q, ids)
end

-- ZADD score, member pairs (a flat list) in calls of at most BATCH pairs.
local function zadd_all(key, pairs)
  for i = 1, #pairs, 2 * BATCH do
    redis.call('ZADD', key, unpack(pairs, i, math.min(i + 2 * BATCH - 1, #pairs)))
  end
end

-- Put a message in line as ready at seq (now if seq is no whole number). A hash gone
-- (or a key that is not a hash) comes back as a stub, which reserve repairs (see the
-- layout above): a message that went into a zset ends run or dead-lettered.
local function make_ready(q, id, seq)
  local m = q.msg .. id
  local priority = redis.pcall('HGET', m, 'p')
  if type(priority) == 'table' then -- an error reply: the key is not a hash
    redis.call('DEL', m)
  end
  seq = whole(seq) or now_units()
  redis.call('HSET', m, 'st', 'r', 's', int(seq))
  redis.call('HDEL', m, 't')
  redis.call('ZADD', q.ready, int(score(priority, seq)), id)
end

-- Free the idempotency key (a message's k field: false or an error reply for none)
-- if this message still holds it.
local function release_key(q, id, key)
  if type(key) == 'string' and redis.call('HGET', q.keys, key) == id then
    redis.call('HDEL', q.keys, key)
  end
end

-- An enqueue's key argument: the key, then NUL and the hold (kh above; '' for none),
-- as gopherq's producers send it; a key with no NUL (another producer's) has none.
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
local function forget(q, id, key)
  local m = q.msg .. id
  if key == nil then
    key = redis.pcall('HGET', m, 'k') -- pcall: a key that is not a hash goes as well
  end
  release_key(q, id, key)
  redis.call('DEL', m)
end

-- Forget an acked message (as forget does; key: its k field, false for none); its key
-- stays held for kh ms, answering with its id, if it holds it and was not cancelled.
local function forget_acked(q, id, key)
  if key then
    local f = redis.call('HMGET', q.msg .. id, 'kh', 'c')
    local ms = whole(f[1])
    if ms and ms > 0 and not f[2] and redis.call('HGET', q.keys, key) == id then
      redis.call('SET', q.keys .. ':' .. key, id, 'PX', int(ms))
    end
  end
  forget(q, id, key)
end

-- Is the message leased under this token?
local function held(q, id, token)
  local f = redis.pcall('HMGET', q.msg .. id, 'st', 't') -- a key not a hash: not held
  return f[1] == 'l' and f[2] == token
end

-- The opening of a script that settles one delivery (KEYS[1] its queue's base, ARGV[1]
-- its id, ARGV[2] its token): if the message is still leased under the token, takes it
-- out of the leased zset and returns the queue, the id and the message's hash key;
-- otherwise (the lease was lost) nil, and the script returns 0.
local function unlease()
  local q, id = queue(1), ARGV[1]
  if not held(q, id, ARGV[2]) then
    return nil
  end
  redis.call('ZREM', q.leased, id)
  return q, id, q.msg .. id
end

-- Give messages back as ready, each in its old place in line (its seq), out of the
-- zset from (q.delayed or q.leased), and wake blocked reserves unless the queue is
-- paused. The ids are ARGV[first], ARGV[first + step], ...; one goes back only when
-- still(j, m) (j its place in ARGV, m its hash key) says it is where the caller
-- expects, which may change its hash first. Returns how many went back.
local function give_back(q, from, first, step, still)
  local moved = {}
  for j = first, #ARGV, step do
    local id = ARGV[j]
    local m = q.msg .. id
    if still(j, m) then
      make_ready(q, id, redis.call('HGET', m, 's'))
      moved[#moved + 1] = id
    end
  end
  zrem_all(from, moved)
  if #moved > 0 and not is_paused(q) then
    wake(q)
  end
  return #moved
end

-- The state letter (r, s, l, d) of a message: its st, or where a foreign writer's
-- entry with some other st (or none) is, by the zset that holds its id; nil if none.
local function state_of(q, id, st)
  if st == 'r' or st == 's' or st == 'l' or st == 'd' then
    return st
  end
  for _, place in ipairs({{'r', q.ready}, {'s', q.delayed}, {'l', q.leased}, {'d', q.dead}}) do
    if redis.call('ZSCORE', place[2], id) then
      return place[1]
    end
  end
  return nil
end

-- now in units, ttl in seconds (as the scripts' callers pass it).
local function drop_old_dead(q, now, ttl)
  local old = redis.call('ZRANGEBYSCORE', q.dead, '-inf', int(now - ttl * UNITS), 'LIMIT', 0, BATCH)
  for _, id in ipairs(old) do
    forget(q, id)
  end
  drop_dead(q, old)
end

-- The lowest score in a zset, or nil when it is empty.
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2])
end

-- Due etas and expired leases become ready, dead letters older than ttl go (now in
-- units, ttl in seconds). Returns how many messages became ready, then the next eta
-- and the next lease expiry still ahead, in units (nil if none). Nothing due (the
-- common case) costs one call per zset: its first score is the next time to report.
local function tidy(q, now, ttl)
  local moved = 0
  local next_eta = first_score(q.delayed)
  if next_eta and next_eta <= now then
    local due = redis.call(
      'ZRANGEBYSCORE', q.delayed, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0, BATCH)
    local ids = {}
    for j = 1, #due, 2 do
      local id = due[j]
      ids[#ids + 1] = id
      -- One that defer put back (w) goes to its old place in line, others by their eta.
      local back = redis.pcall('HMGET', q.msg .. id, 'w', 's')
      if back[1] then
        redis.call('HDEL', q.msg .. id, 'w')
      end
      make_ready(q, id, back[1] and back[2] or due[j + 1])
    end
    moved = moved + #ids
    zrem_all(q.delayed, ids)
    next_eta = first_score(q.delayed)
  end
  local next_expiry = first_score(q.leased)
  if next_expiry and next_expiry <= now then
    local expired = redis.call('ZRANGEBYSCORE', q.leased, '-inf', int(now), 'LIMIT', 0, BATCH)
    for _, id in ipairs(expired) do
      make_ready(q, id, redis.pcall('HGET', q.msg .. id, 's'))
    end
    moved = moved + #expired
    zrem_all(q.leased, expired)
    next_expiry = first_score(q.leased)
  end
  drop_old_dead(q, now, ttl)
  return moved, next_eta, next_expiry
end

-- Tidy a queue, then count it as stats reports it (now in units, ttl in seconds).
-- Returns due etas and expired leases that tidy left for later (beyond its batch),
-- which count as ready; then scheduled, running and dead messages and the paused flag.
local function tidy_counts(q, now, ttl)
  tidy(q, now, ttl)
  local due = redis.call('ZCOUNT', q.delayed, '-inf', int(now))
  local expired = redis.call('ZCOUNT', q.leased, '-inf', int(now))
  return due + expired, redis.call('ZCARD', q.delayed) - due,
    redis.call('ZCARD', q.leased) - expired, redis.call('ZCARD', q.dead),
    redis.call('EXISTS', q.paused)
end

-- Store one job record under key and wake its waiters (the result backend's layout
-- above): a finished record (ttl_ms not '') gets its time to live and a completion
-- token (a list of one entry, the record itself when inline is '1', else empty) that
-- lives done_ms; an unfinished one has neither. A token never outlives its record.
local function store_result(key, blob, ttl_ms, done_ms, inline)
  local done = key .. ':done'
  redis.call('DEL', done)
  if ttl_ms == '' then
    redis.call('SET', key, blob)
  else
    redis.call('SET', key, blob, 'PX', ttl_ms)
    redis.call('RPUSH', done, inline == '1' and blob or '')
    redis.call('PEXPIRE', done, done_ms)
  end
end

-- The job history's indexes (base P:{jobs}, layout above). A record's place is its
-- state, task and queue joined by NUL (task '' for none: in no task index).
local function job_place_keys(base, place)
  local first = string.find(place, '\0', 1, true) or #place + 1
  local second = string.find(place, '\0', first + 1, true) or #place + 1
  local task = string.sub(place, first + 1, second - 1)
  return {
    base .. ':s:' .. string.sub(place, 1, first - 1),
    task ~= '' and base .. ':t:' .. task,
    base .. ':q:' .. string.sub(place, second + 1),
  }
end

-- Index id under created (unix seconds; '' keeps its first store time, now) in the
-- history and in the indexes of place, out of those of the place it had. When
-- only_new, an id indexed already is left as it is (the backfill: never over a
-- newer writer's place). A re-store costs two calls, a state change five.
local function index_job(base, id, created, now, place, only_new)
  local all, where = base .. ':index', base .. ':where'
  local old = redis.call('HGET', where, id)
  if only_new and old then
    return
  end
  local moved, score -- moved: its score in the history changed
  if created ~= '' then
    moved, score = redis.call('ZADD', all, 'CH', created, id) == 1, created
  else
    moved = redis.call('ZADD', all, 'NX', now, id) == 1
  end
  if old == place and not moved then
    return -- in its indexes under its score already
  end
  score = score or redis.call('ZSCORE', all, id)
  local keys = job_place_keys(base, place)
  local before = old and job_place_keys(base, old) or {false, false, false}
  for i = 1, 3 do
    if before[i] ~= keys[i] and before[i] then
      redis.call('ZREM', before[i], id)
    end
    if keys[i] and (moved or before[i] ~= keys[i]) then
      redis.call('ZADD', keys[i], score, id)
    end
  end
  if old ~= place then
    redis.call('HSET', where, id, place)
  end
end

-- Take id out of every index of the job history; 1 if it was in the history.
local function unindex_job(base, id)
  local where = base .. ':where'
  local old = redis.call('HGET', where, id)
  if old then
    for _, key in ipairs(job_place_keys(base, old)) do
      if key then
        redis.call('ZREM', key, id)
      end
    end
    redis.call('HDEL', where, id)
  end
  return redis.call('ZREM', base .. ':index', id)
end

-- A script's array reply as one msgpack string where the server has cmsgpack (Redis
-- does): the client then decodes it in C instead of parsing each element of a RESP
-- array in Python, most of the client's cost of a reserve.
local function reply(t)
  if rawget(_G, 'cmsgpack') then
    return cmsgpack.pack(t)
  end
  return t
end
