-- vacuum_done.lua: forget purchase jobs apalis has finished.
--
-- apalis keeps every acked job's payload (data hash), metadata (a hash per
-- job) and id (done set) forever; a 100,000-order sale leaves ~300,000
-- keys behind. Only jobs in the done set are removed: a failed job waiting
-- for its retry keeps its payload (apalis's own vacuum would delete it,
-- since it goes by the job's last status, and the retry would then fail to
-- load). Dead jobs stay for inspection.
--
-- KEYS[1]  apalis done set
-- KEYS[2]  apalis job data hash
-- ARGV[1]  apalis job metadata prefix (a job's metadata is "<prefix>:<id>";
--          it shares the queue's hash tag, so the same cluster slot)
-- ARGV[2]  at most this many jobs
--
-- Returns the number of jobs forgotten.

local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', ARGV[1] .. ':' .. id)
end
return #ids
