-- result_token: a new completion token for a finished record whose token has expired
-- (key layout: lib.lua), so that the waiter's BLMOVE that follows in the same write
-- returns at once.
--
-- KEYS  [1] the record's key P:result:{id}; its token list is KEYS[1] .. ':done'
-- ARGV  [1] largest record (bytes) that is its own token  [2] the token's time to live, ms
-- Only finished records have a time to live, so that is the test. Returns 1.

local done = KEYS[1] .. ':done'
if redis.call('EXISTS', done) == 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    local record = redis.call('GET', KEYS[1])
    redis.call('RPUSH', done, #record <= tonumber(ARGV[1]) and record or '')
    redis.call('PEXPIRE', done, math.min(ttl, tonumber(ARGV[2])))
  end
end
return 1
