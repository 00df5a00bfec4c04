#!lua flags=no-writes
-- event_job: the events of one job, oldest first, by the entry ids of its list
-- (key layout: lib.lua's neighbour, gopherq.events.redis; event_add.lua writes it). Entries the
-- stream no longer holds (trimmed by count or age) are left out.
--
-- KEYS  [1] the event stream  [2] the job's list of entry ids (one hash slot with KEYS[1])
-- ARGV  [1] the lowest entry time in ms: entries from ARGV[1]-0 on
--       [2] the highest: entries up to ARGV[2]-0 included ('' for no bound)
--       [3] most entries returned
-- Returns entry id, event (msgpack), entry id, event, ... (a flat array).

local low, high, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, n = {}, 0
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if ms and ms >= low and (not high or ms < high or (ms == high and seq == 0)) then
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry then
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'e' then
          out[#out + 1] = id
          out[#out + 1] = fields[i + 1]
          n = n + 1
        end
      end
      if n >= most then
        break
      end
    end
  end
end
return out
