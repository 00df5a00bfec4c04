#!lua
-- event_add: append an event to the event stream, and the same entry under the same
-- id to the side stream of worker events, which readers of those types alone walk
-- instead of the whole log (key layout: lib.lua's neighbour, gopherq.events.redis).
-- It adds memory: no allow-oom flag.
--
-- KEYS  [1] the event stream  [2] the side stream (one hash slot with KEYS[1])
-- ARGV  [1] most entries either stream keeps (approximate)  [2] the event (msgpack)
-- Returns the entry's id.

local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'e', ARGV[2])
return id
