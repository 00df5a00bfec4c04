#!lua flags=allow-oom
-- settle_held: store the job records of one queue's finished deliveries that are still
-- held, and ack them (or renew their leases), in one step (key layout: lib.lua). Only
-- where the result store is the broker's own Redis, not a cluster: the keys of a
-- record and of its queue are in different slots.
--
-- KEYS  [1] the queue's key base P:{q}  [2] the job history's base P:{jobs}
--       [3] P:{_}:result-expiry
--       then P:result:{id} of each delivery with a record, in ARGV order
-- ARGV  [1] lease seconds  [2] completion token time to live in ms
--       [3] now, unix seconds (the indexes' time)  [4] expiry time of a finished record
--       then 10 fields per delivery: id, token, '1' to ack ('0': renew its lease),
--       record ('' for none), its time to live in ms ('' while unfinished), '1' when
--       its completion token is the record itself, its created time ('' for none),
--       its state, task and queue (the indexes of the job history it goes in)
-- A delivery no longer leased under its token is left alone, its record unwritten: a
-- worker whose lease ran out never overwrites the record of the one that ran the task
-- again. Returns the ids still held.
-- allow-oom: at maxmemory the workers must still drain (each ack frees a message; a
-- batch's records may take Redis past its limit by about what those messages held).

local q = queue(1)
local held_ids, gone = {}, {}
local lease_end
local record_key = 3
for j = 5, #ARGV, 10 do
  local id, blob = ARGV[j], ARGV[j + 3]
  if blob ~= '' then
    record_key = record_key + 1
  end
  local f = redis.pcall('HMGET', q.msg .. id, 'st', 't', 'k') -- held(), and the key at once
  if f[1] == 'l' and f[2] == ARGV[j + 1] then
    held_ids[#held_ids + 1] = id
    if blob ~= '' then
      local ttl_ms, created = ARGV[j + 4], ARGV[j + 6]
      store_result(KEYS[record_key], blob, ttl_ms, ARGV[2], ARGV[j + 5])
      local place = ARGV[j + 7] .. '\0' .. ARGV[j + 8] .. '\0' .. ARGV[j + 9]
      index_job(KEYS[2], id, created, ARGV[3], place, false)
      if ttl_ms ~= '' then
        redis.call('ZADD', KEYS[3], ARGV[4], id)
      else
        redis.call('ZREM', KEYS[3], id)
      end
    end
    if ARGV[j + 2] == '1' then
      forget_acked(q, id, f[3])
      gone[#gone + 1] = id
    else
      lease_end = lease_end or int(now_units() + tonumber(ARGV[1]) * UNITS)
      redis.call('ZADD', q.leased, lease_end, id)
    end
  end
end
zrem_all(q.leased, gone)
return held_ids
