#!lua
-- event_add: append an event to the event stream and, under the same entry id, to a
-- second key (key layout: lib.lua's neighbour, gopherq.events.redis): the side stream
-- of worker events, which readers of those types alone walk instead of the whole log;
-- or the list of the entry ids of one job's events, which job_events reads instead of
-- searching the log. It adds memory: no allow-oom flag.
--
-- KEYS  [1] the event stream  [2] the side stream, or the job's list (one hash slot
--       with KEYS[1])
-- ARGV  [1] most entries either stream keeps (approximate)  [2] the event (msgpack)
--       [3] '' for a worker event; else the job list's time to live in ms (the
--       events' retention: it lives that long after the job's last event)
--       [4] most ids a job's list keeps: its first ones
-- Returns the entry's id.

local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
if ARGV[3] == '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'e', ARGV[2])
else
  if redis.call('RPUSH', KEYS[2], id) > tonumber(ARGV[4]) then
    redis.call('RPOP', KEYS[2])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return id
