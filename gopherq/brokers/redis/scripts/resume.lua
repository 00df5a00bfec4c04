#!lua flags=allow-oom
-- resume: hand out messages of one queue again (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  none
-- Drops the paused mark and pushes a wake token: a woken reserve tidies the queue
-- and takes what is ready. One script rather than three commands for allow-oom: a
-- queue paused at maxmemory must resume, or nothing drains. Returns 1.

local q = queue(1)
redis.call('DEL', q.paused)
wake(q)
return 1
