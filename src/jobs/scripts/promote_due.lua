-- promote_due.lua: move one chunk of purchase jobs whose run time has come
-- from apalis's scheduled set to its active list.
--
-- apalis 1.0 pushes every job into the scheduled set (run_at = now) and its
-- fetch script promotes all due jobs with one unpack(), which Lua refuses
-- past ~8000 elements ("too many results to unpack"): a backlog that large
-- would stop every consumer for good. Workers run this before fetching and
-- continuously beside it, so the due set apalis sees stays small. One call
-- moves at most one chunk (a short pause for Redis, whatever the backlog);
-- the caller calls again while whole chunks come back.
--
-- KEYS[1]  apalis scheduled set (task id -> run at, Unix seconds)
-- KEYS[2]  apalis active list
-- KEYS[3]  apalis signal list
-- ARGV[1]  chunk size (<= 1000)
--
-- Returns the number of jobs promoted.

local now = tonumber(redis.call('TIME')[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now, 'LIMIT', 0, tonumber(ARGV[1]))
local promoted = #due
if promoted > 0 then
  redis.call('RPUSH', KEYS[2], unpack(due))
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
end
return promoted
