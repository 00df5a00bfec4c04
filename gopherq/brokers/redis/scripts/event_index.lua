#!lua
-- event_index: put entries of the event stream added before the jobs' lists of
-- entry ids existed into those lists (key layout: lib.lua's neighbour,
-- gopherq.events.redis): the lazy backfill of job_events, which walks the stream from
-- its newest entry back. An entry goes in front of its job's list when it is older
-- than the list's first id, or the list is empty: so an entry event_add.lua has put
-- in the list already is not put twice.
--
-- KEYS  the job's list of each entry (one hash slot with the stream)
-- ARGV  [1] a new list's time to live in ms  [2] most ids a job's list keeps: its
--       first ones  then the entry id of each key, in KEYS order, newest first
-- Returns how many ids went into lists.

local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)%-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams < bms or (ams == bms and tonumber(aseq) < tonumber(bseq))
end

local added = 0
for i, key in ipairs(KEYS) do
  local id = ARGV[i + 2]
  local first = redis.call('LINDEX', key, 0)
  if not first or older(id, first) then
    if redis.call('LPUSH', key, id) > tonumber(ARGV[2]) then
      redis.call('RPOP', key)
    end
    if not first then
      redis.call('PEXPIRE', key, ARGV[1])
    end
    added = added + 1
  end
end
return added
