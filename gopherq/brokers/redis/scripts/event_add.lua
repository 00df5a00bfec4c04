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
--       [2] a job list's time to live in ms (the events' retention by age: it lives
--       that long after the job's last event; less when the stream is full, see
--       below)  [3] most ids a job's list keeps: its first
--       then 2 fields per event: its second key (0 for none, else its KEYS index), the
--       event (msgpack)
-- Returns how many events were added.
--
-- Once the stream holds its most entries, it is trimmed by count, and its entries
-- live about as long as the span from its first entry to now: a job's list then
-- lives twice that span (at least a second, at most ARGV[2]), so that the lists stay
-- in proportion to the jobs the stream still holds.

local ttl = tonumber(ARGV[2])
if #KEYS > 2 and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if first then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local span = now - tonumber(string.match(first[1], '^(%d+)'))
    ttl = math.min(ttl, math.max(2 * span, 1000))
  end
end
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
  redis.call('PEXPIRE', KEYS[k], string.format('%d', ttl))
end
return n
