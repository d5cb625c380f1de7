-- trim_dead.lua: keep at most a number of dead purchase jobs.
--
-- apalis keeps every dead job's payload, metadata and id forever. A dead
-- purchase job loses nothing when dropped: its reservation stays in the
-- sale's pending set and the reconciler queues it again. Jobs beyond the
-- number kept are dropped (any of them: the dead set is a set), at most
-- ARGV[3] per call so one call stays short.
--
-- KEYS[1]  apalis dead set
-- KEYS[2]  apalis job data hash
-- ARGV[1]  apalis job metadata prefix (a job's metadata is "<prefix>:<id>";
--          it shares the queue's hash tag, so the same cluster slot)
-- ARGV[2]  dead jobs to keep
-- ARGV[3]  at most this many dropped per call
--
-- Returns the number of jobs dropped.

local surplus = redis.call('SCARD', KEYS[1]) - tonumber(ARGV[2])
if surplus <= 0 then
  return 0
end
local ids = redis.call('SPOP', KEYS[1], math.min(surplus, tonumber(ARGV[3])))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', ARGV[1] .. ':' .. id)
end
return #ids
