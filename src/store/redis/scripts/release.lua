-- release.lua: end a pending reservation without an order, giving its units
-- back. Idempotent: a reservation that is no longer pending (confirmed, or
-- already released) is left alone, so stock can never be returned twice.
--
-- KEYS[1]  stock counter
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> "<user>|<quantity>|<status>|<ms>|<reason>")
-- KEYS[4]  pending set
-- KEYS[5]  stats hash
-- ARGV[1]  reservation id
-- ARGV[2]  outcome: released | expired | failed
-- ARGV[3]  reason shown to the shopper (no '|')
--
-- Returns {'RELEASED', remaining} | {'NOT_PENDING', status} | {'UNKNOWN'} (strings)

local record = redis.call('HGET', KEYS[3], ARGV[1])
if not record then
  return {'UNKNOWN'}
end
local user, quantity, status, reserved_ms = string.match(record, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
if status ~= 'pending' then
  return {'NOT_PENDING', status}
end
quantity = tonumber(quantity)

local remaining = redis.call('INCRBY', KEYS[1], quantity)
if redis.call('HINCRBY', KEYS[2], user, -quantity) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
redis.call('HSET', KEYS[3], ARGV[1], user .. '|' .. quantity .. '|' .. ARGV[2] .. '|' .. reserved_ms .. '|' .. ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
redis.call('HINCRBY', KEYS[5], 'units_released', quantity)
return {'RELEASED', tostring(remaining)}
