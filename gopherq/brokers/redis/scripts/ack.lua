#!lua flags=allow-oom
-- ack: forget finished messages of one queue (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  pairs of id, token (at most 1000 pairs)
-- A message counts only while it is leased under that token. Returns how many. Its
-- idempotency key is freed, or held on for its hold (forget_acked, lib.lua).

local q = queue(1)
local gone = {}
for j = 1, #ARGV, 2 do
  local id = ARGV[j]
  local f = redis.pcall('HMGET', q.msg .. id, 'st', 't', 'k') -- held(), and the key at once
  if f[1] == 'l' and f[2] == ARGV[j + 1] then
    forget_acked(q, id, f[3])
    gone[#gone + 1] = id
  end
end
zrem_all(q.leased, gone)
return #gone
