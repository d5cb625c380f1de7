-- confirm.lua: mark reservations whose orders PostgreSQL has committed as
-- confirmed, drop them from the pending set, count them, and tell the
-- sale's subscribers each shopper's outcome, with the order and what a
-- shopper needs to work out its hold's terms (remaining stock does not change
-- here; API nodes read it from Redis every ~100 ms). Idempotent: only
-- pending reservations change, so a redelivered batch counts nothing twice. Reservations Redis no longer knows
-- (it lost its data) are skipped: PostgreSQL holds their orders.
--
-- KEYS[1]  reservations hash (reservation -> record, see record.lua)
-- KEYS[2]  pending set
-- KEYS[3]  stats hash
-- ARGV[1]  sale id, for the events
-- ARGV[2]  pub/sub channel of the sale's events
-- ARGV[3..] pairs: reservation id, its order id ('' when not known)
--
-- Returns the number of reservations confirmed by this call.

local confirmed, units = 0, 0
for i = 3, #ARGV, 2 do
  local reservation, order = ARGV[i], ARGV[i + 1]
  local user, quantity, status, reserved_ms, key = decode_record(redis.call('HGET', KEYS[1], reservation))
  if user then
    if status == 'pending' then
      redis.call('HSET', KEYS[1], reservation, encode_record(user, quantity, 'confirmed', reserved_ms, key, '', order))
      redis.call('ZREM', KEYS[2], reservation)
      confirmed = confirmed + 1
      units = units + quantity
      redis.call('PUBLISH', ARGV[2], cjson.encode({
        type = 'purchase', sale_id = ARGV[1], reservation_id = reservation, user_id = user,
        status = 'confirmed', order_id = (order ~= '') and order or nil,
        quantity = quantity, reserved_ms = tonumber(reserved_ms)
      }))
    end
  end
end
if confirmed > 0 then
  redis.call('HINCRBY', KEYS[3], 'confirmed', confirmed)
  redis.call('HINCRBY', KEYS[3], 'units_confirmed', units)
  redis.call('HINCRBY', KEYS[3], 'pending_units', -units)
end
return confirmed
