#!lua flags=allow-oom
-- locate: where one message of one queue is, after tidying it (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  [1] dead-letter ttl (seconds)  [2] id
-- Returns its state letter (r ready, s scheduled, l leased, d dead), or '' if it is
-- not in this queue.

local q = queue(1)
tidy(q, now_units(), tonumber(ARGV[1]))
return state_of(q, ARGV[2], redis.pcall('HGET', q.msg .. ARGV[2], 'st')) or ''
