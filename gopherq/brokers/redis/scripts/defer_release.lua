#!lua flags=allow-oom
-- defer_release: make scheduled messages of one queue ready at once, in their old
-- place in line: those rate_release handed back (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  ids; one no longer scheduled (it ran, or went) is left alone
-- Returns how many became ready.

local q = queue(1)
return give_back(q, q.delayed, 1, 1, function(j, m)
  if redis.call('ZSCORE', q.delayed, ARGV[j]) and redis.pcall('HGET', m, 'st') == 's' then
    redis.call('HDEL', m, 'w')
    return true
  end
  return false
end)
