-- release.lua: end a pending reservation without an order. Idempotent: a
-- reservation that is no longer pending (confirmed, or already released) is
-- left alone, so units can never be returned twice.
--
-- The shopper's units are always given back (they may buy again). Of the
-- reservation's stock units, ARGV[4] go back to the counter and the rest
-- are written off: when PostgreSQL had no unit for part of it, Redis had
-- counted units that do not exist, and returning them would sell them again.
-- With ARGV[7] (the room PostgreSQL has left for the sale, -1 for none)
-- no more go back than keep Redis's promises (stock + pending units)
-- within that room: the room belongs first to reservations still pending.
--
-- KEYS[1]  meta hash (its `stock` field is the counter)
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> record, see record.lua)
-- KEYS[4]  pending set
-- KEYS[5]  stats hash
-- ARGV[1]  reservation id
-- ARGV[2]  outcome: released | expired | failed
-- ARGV[3]  reason code (a FailureReason code; never prose)
-- ARGV[4]  units to put back in stock (0 to the reservation's quantity)
-- ARGV[5]  sale id, for the event
-- ARGV[6]  pub/sub channel of the sale's events
-- ARGV[7]  room left in PostgreSQL for the sale, or -1 (no cap)
--
-- Returns {'RELEASED', remaining} | {'NOT_PENDING', status} | {'UNKNOWN'} (strings)

local user, quantity, status, reserved_ms, key = decode_record(redis.call('HGET', KEYS[3], ARGV[1]))
if not user then
  return {'UNKNOWN'}
end
if status ~= 'pending' then
  return {'NOT_PENDING', status}
end

local restock = math.min(math.max(tonumber(ARGV[4]), 0), quantity)
local room = tonumber(ARGV[7])
if room >= 0 then
  local promised = tonumber(redis.call('HGET', KEYS[1], 'stock') or '0')
    + tonumber(redis.call('HGET', KEYS[5], 'pending_units') or '0') - quantity
  restock = math.max(math.min(restock, room - promised), 0)
end
local remaining
if restock > 0 then
  remaining = redis.call('HINCRBY', KEYS[1], 'stock', restock)
else
  remaining = tonumber(redis.call('HGET', KEYS[1], 'stock') or '0')
end
if restock < quantity then
  redis.call('HINCRBY', KEYS[5], 'units_written_off', quantity - restock)
end
if redis.call('HINCRBY', KEYS[2], user, -quantity) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
redis.call('HSET', KEYS[3], ARGV[1], encode_record(user, quantity, ARGV[2], reserved_ms, key, ARGV[3]))
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
redis.call('HINCRBY', KEYS[5], 'units_released', quantity)
redis.call('HINCRBY', KEYS[5], 'pending_units', -quantity)
redis.call('PUBLISH', ARGV[6], cjson.encode({
  type = 'purchase', sale_id = ARGV[5], reservation_id = ARGV[1], user_id = user,
  status = ARGV[2], reason = ARGV[3]
}))
return {'RELEASED', tostring(remaining)}
