-- arm_sale.lua: mirror one sale from PostgreSQL into Redis, idempotently.
--
-- The stock counter (the meta hash's `stock` field) is built only when it
-- is missing (first arming, or Redis lost its data); otherwise it is left alone, because reservations have been
-- taking units from it. Stock added in PostgreSQL since the last arming
-- (allotted grew) is added to the counter exactly once, and to
-- `stock_grown` (see return_held.lua). Running this twice with the same
-- arguments changes nothing the second time.
--
-- A rebuilt counter is allotted - confirmed - units of pending reservations
-- that survived in Redis, so stock is never invented. The per-user units
-- are rebuilt with it: the caller has staged the units PostgreSQL holds
-- per buyer in a hash (KEYS[7], written in chunks), which becomes the
-- buyers hash at once, plus the surviving pending units, so per-user limits
-- hold across the loss; the newest surviving pending reservation of a user
-- becomes their latest unless a newer one is known. A caller that staged nothing (it saw the counter
-- present) gets {.., needs_restore = 1} and nothing is written if the
-- counter turns out missing after all.
--
-- Sale state only moves forward: the meta hash keeps the version of the
-- sale it mirrors (PostgreSQL adds one on every admin change), and a caller
-- holding an older version than the one armed changes nothing. Otherwise a
-- reader that saw the sale before a cancel (the reconciler, a readiness
-- probe, a purchase re-arming a missing sale) would arm "active" again.
--
-- KEYS[1]  meta hash of the sale (its `stock` field is the counter)
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> record, see record.lua)
-- KEYS[4]  pending set
-- KEYS[5]  stats hash
-- KEYS[6]  staged buyers hash (user -> units confirmed in PostgreSQL), if staged
-- KEYS[7]  shoppers hash ("<user>|latest" -> latest reservation and next
--          attempt, see record.lua)
-- ARGV[1]  allotted units (PostgreSQL flash_sales.allotted_quantity)
-- ARGV[2]  units already confirmed in PostgreSQL (never sold twice)
-- ARGV[3]  stored state (scheduled | active | paused | ended | cancelled)
-- ARGV[4]  starts_at, Unix milliseconds
-- ARGV[5]  ends_at, Unix milliseconds
-- ARGV[6]  per-user limit, units
-- ARGV[7]  sale price, minor units
-- ARGV[8]  the sale's version in PostgreSQL
-- ARGV[9]  1 if the caller staged the buyers (KEYS[6]; absent = no buyers), else 0
--
-- Returns {remaining units, 1 if the counter was (re)built else 0,
--          1 if a newer version was armed already (nothing written) else 0,
--          1 if a rebuild is needed but nothing was staged (nothing written) else 0}.

local version = tonumber(ARGV[8])
local armed = redis.call('HMGET', KEYS[1], 'version', 'allotted', 'stock')
local armed_version = tonumber(armed[1] or '0')
if armed_version > version then
  redis.call('DEL', KEYS[6])
  return {tonumber(armed[3] or '0'), 0, 1, 0}
end

local allotted = tonumber(ARGV[1])
local confirmed = tonumber(ARGV[2])
local armed_allotted = tonumber(armed[2])
local rebuilt = 0

if armed[3] == false or armed_allotted == nil then
  if ARGV[9] ~= '1' then
    return {0, 0, 0, 1}
  end
  local pending_units, pending_by_user, latest_by_user = 0, {}, {}
  for _, reservation in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local user, quantity, status = decode_record(redis.call('HGET', KEYS[3], reservation))
    if status == 'pending' then
      pending_units = pending_units + quantity
      pending_by_user[user] = (pending_by_user[user] or 0) + quantity
      latest_by_user[user] = reservation
    else
      redis.call('ZREM', KEYS[4], reservation)
    end
  end
  redis.call('HSET', KEYS[1], 'stock', math.max(allotted - confirmed - pending_units, 0))
  redis.call('HSET', KEYS[5], 'pending_units', pending_units)
  if redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('RENAME', KEYS[6], KEYS[2])
    redis.call('PERSIST', KEYS[2])
  else
    redis.call('DEL', KEYS[2])
  end
  for user, units in pairs(pending_by_user) do
    redis.call('HINCRBY', KEYS[2], user, units)
  end
  for user, reservation in pairs(latest_by_user) do
    raise_latest(KEYS[7], user, reservation)
  end
  armed_allotted = allotted
  rebuilt = 1
else
  redis.call('DEL', KEYS[6])
  if allotted > armed_allotted then
    redis.call('HINCRBY', KEYS[1], 'stock', allotted - armed_allotted)
    redis.call('HINCRBY', KEYS[1], 'stock_grown', allotted - armed_allotted)
    armed_allotted = allotted
  end
end

redis.call('HSET', KEYS[1],
  'allotted', armed_allotted,
  'state', ARGV[3],
  'starts_at_ms', ARGV[4],
  'ends_at_ms', ARGV[5],
  'per_user_limit', ARGV[6],
  'price', ARGV[7],
  'version', version)

return {tonumber(redis.call('HGET', KEYS[1], 'stock')), rebuilt, 0, 0}
