#!lua
-- event_add: append a batch of events to the event stream and, under the same entry
-- id, each to a second key where it has one (key layout: lib.lua's neighbour,
-- gopherq.events.redis): the side stream of worker events, which readers of those
-- types alone walk instead of the whole log; or the list of the entry ids of its
-- job's events, which job_events reads instead of searching the log. One call a
-- batch: the script's own cost is paid once. It adds memory: no allow-oom flag.
--
-- KEYS  [1] the event stream  [2] the side stream  then the lists of the batch's jobs,
--       each once (one hash slot with KEYS[1])
-- ARGV  [1] most entries either stream keeps (approximate)
--       [2] a job list's time to live in ms (the events' retention: it lives that
--       long after the job's last event)  [3] most ids a job's list keeps: its first
--       then 2 fields per event: its second key (0 for none, else its KEYS index), the
--       event (msgpack)
-- Returns how many events were added.

local n = 0
for j = 4, #ARGV, 2 do
  local second, event = tonumber(ARGV[j]), ARGV[j + 1]
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', event)
  if second == 2 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'e', event)
  elseif second > 2 and redis.call('RPUSH', KEYS[second], id) > tonumber(ARGV[3]) then
    redis.call('RPOP', KEYS[second])
  end
  n = n + 1
end
for k = 3, #KEYS do
  redis.call('PEXPIRE', KEYS[k], ARGV[2])
end
return n
