-- result_unindex: take job ids out of every index of the job history
-- (key layout: lib.lua): their records were deleted or expired. One hash slot
-- (P:{jobs}).
--
-- KEYS  [1] the job history's key base P:{jobs}
-- ARGV  the ids
-- Returns how many were in the history.

local removed = 0
for _, id in ipairs(ARGV) do
  removed = removed + unindex_job(KEYS[1], id)
end
return removed
