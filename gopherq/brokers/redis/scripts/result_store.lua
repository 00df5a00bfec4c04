-- result_store: store one job record and wake its waiters (key layout: lib.lua).
--
-- KEYS  [1] the record's key P:result:{id}; its waiters block on KEYS[1] .. ':done'
-- ARGV  [1] the record (msgpack)  [2] its time to live in ms, '' while unfinished
--       [3] the completion token's time to live in ms
--       [4] '1' when the token is the record itself (small), '0' for an empty token
-- A finished record gets its time to live and a completion token (a list of one
-- entry) that wakes every waiter; an unfinished one has neither. One script, so a
-- token never outlives its record or lacks its time to live. Returns 1.

store_result(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
