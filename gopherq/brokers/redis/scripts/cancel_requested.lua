#!lua flags=no-writes
-- cancel_requested: which messages of one queue carry the cancel mark
-- (key layout: lib.lua).
--
-- KEYS  [1] the queue's key base P:{q}
-- ARGV  ids (at most 1000), of messages leased by the caller
-- Returns the ids whose message hash has c (set by cancel.lua), in ARGV order.

local q = queue(1)
local out = {}
for j = 1, #ARGV do
  if redis.pcall('HEXISTS', q.msg .. ARGV[j], 'c') == 1 then
    out[#out + 1] = ARGV[j]
  end
end
return out
