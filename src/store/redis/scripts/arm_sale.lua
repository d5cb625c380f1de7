-- arm_sale.lua: mirror one sale from PostgreSQL into Redis, idempotently.
--
-- The stock counter is built only when it is missing (first arming, or Redis
-- lost its data); otherwise it is left alone, because reservations have been
-- taking units from it. Stock added in PostgreSQL since the last arming
-- (allotted grew) is added to the counter exactly once. Running this twice
-- with the same arguments changes nothing the second time.
--
-- KEYS[1]  stock counter of the sale
-- KEYS[2]  meta hash of the sale
-- ARGV[1]  allotted units (PostgreSQL flash_sales.allotted_quantity)
-- ARGV[2]  units already confirmed in PostgreSQL (never sold twice)
-- ARGV[3]  stored state (scheduled | active | paused | ended | cancelled)
-- ARGV[4]  starts_at, Unix milliseconds
-- ARGV[5]  ends_at, Unix milliseconds
-- ARGV[6]  per-user limit, units
-- ARGV[7]  sale price, minor units
--
-- Returns {remaining units, 1 if the counter was (re)built else 0}.

local allotted = tonumber(ARGV[1])
local confirmed = tonumber(ARGV[2])
local armed_allotted = tonumber(redis.call('HGET', KEYS[2], 'allotted'))
local rebuilt = 0

if redis.call('EXISTS', KEYS[1]) == 0 or armed_allotted == nil then
  redis.call('SET', KEYS[1], math.max(allotted - confirmed, 0))
  armed_allotted = allotted
  rebuilt = 1
elseif allotted > armed_allotted then
  redis.call('INCRBY', KEYS[1], allotted - armed_allotted)
  armed_allotted = allotted
end

redis.call('HSET', KEYS[2],
  'allotted', armed_allotted,
  'state', ARGV[3],
  'starts_at_ms', ARGV[4],
  'ends_at_ms', ARGV[5],
  'per_user_limit', ARGV[6],
  'price', ARGV[7])

return {tonumber(redis.call('GET', KEYS[1])), rebuilt}
