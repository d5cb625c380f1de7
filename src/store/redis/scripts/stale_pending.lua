-- stale_pending.lua: the oldest pending reservations reserved more than a
-- threshold ago, by Redis server time (the clock reservations were scored
-- with), for the reconciler to re-enqueue.
--
-- KEYS[1]  pending set (reservation -> reserved ms)
-- KEYS[2]  reservations hash (reservation -> record, see record.lua)
-- ARGV[1]  threshold, milliseconds
-- ARGV[2]  at most this many
--
-- Returns {reservation id, record, reservation id, record, ...}; a record is
-- '' when the hash lost it.

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[1]),
  'LIMIT', 0, tonumber(ARGV[2]))
local reply = {}
for _, id in ipairs(ids) do
  table.insert(reply, id)
  table.insert(reply, redis.call('HGET', KEYS[2], id) or '')
end
return reply
