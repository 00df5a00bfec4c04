-- result_index: put stored job records in the indexes of the job history
-- (key layout: lib.lua): the history, and the indexes of each one's state, task and
-- queue, out of those of the place it had. One hash slot (P:{jobs}), so it works on
-- Redis Cluster.
--
-- KEYS  [1] the job history's key base P:{jobs}
-- ARGV  [1] now, unix seconds (the score of an id stored first without a created time)
--       [2] '1' to index only ids not indexed yet (the backfill), else '0'
--       then 5 fields per record: id, created ('' for none), state, task, queue
-- Returns 1.

local only_new = ARGV[2] == '1'
for j = 3, #ARGV, 5 do
  local place = ARGV[j + 2] .. '\0' .. ARGV[j + 3] .. '\0' .. ARGV[j + 4]
  index_job(KEYS[1], ARGV[j], ARGV[j + 1], ARGV[1], place, only_new)
end
return 1
