-- release.lua: end a pending reservation without an order. Idempotent: a
-- reservation that is no longer pending (confirmed, or already released) is
-- left alone, so units can never be returned twice.
--
-- The shopper's units are always given back (they may buy again). The stock
-- unit goes back to the counter unless ARGV[4] is 0: when PostgreSQL had no
-- unit for this reservation, Redis had counted one that does not exist, and
-- returning it would sell it again.
--
-- KEYS[1]  stock counter
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> "<user>|<quantity>|<status>|<ms>|<key>|<reason>")
-- KEYS[4]  pending set
-- KEYS[5]  stats hash
-- ARGV[1]  reservation id
-- ARGV[2]  outcome: released | expired | failed
-- ARGV[3]  reason shown to the shopper (no '|')
-- ARGV[4]  1 to put the unit back in stock, 0 to write it off
-- ARGV[5]  sale id, for the event
-- ARGV[6]  pub/sub channel of the sale's events
--
-- Returns {'RELEASED', remaining} | {'NOT_PENDING', status} | {'UNKNOWN'} (strings)

local record = redis.call('HGET', KEYS[3], ARGV[1])
if not record then
  return {'UNKNOWN'}
end
local user, quantity, status, reserved_ms, key =
  string.match(record, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
if status ~= 'pending' then
  return {'NOT_PENDING', status}
end
quantity = tonumber(quantity)

local remaining
if ARGV[4] == '1' then
  remaining = redis.call('INCRBY', KEYS[1], quantity)
else
  remaining = tonumber(redis.call('GET', KEYS[1]) or '0')
  redis.call('HINCRBY', KEYS[5], 'units_written_off', quantity)
end
if redis.call('HINCRBY', KEYS[2], user, -quantity) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
redis.call('HSET', KEYS[3], ARGV[1],
  user .. '|' .. quantity .. '|' .. ARGV[2] .. '|' .. reserved_ms .. '|' .. key .. '|' .. ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
redis.call('HINCRBY', KEYS[5], 'units_released', quantity)
redis.call('HINCRBY', KEYS[5], 'pending_units', -quantity)
redis.call('PUBLISH', ARGV[6], cjson.encode({
  type = 'purchase', sale_id = ARGV[5], reservation_id = ARGV[1], user_id = user,
  status = ARGV[2], reason = ARGV[3]
}))
return {'RELEASED', tostring(remaining)}
