-- restore_orders.lua: after Redis lost a sale's data, put back what a
-- retry needs of orders PostgreSQL committed: the key's replay record, the
-- reservation (confirmed; or, for an order whose checkout hold ended
-- unpaid, how it ended, so that its units are not given back a second
-- time) and the user's latest reservation, so that a
-- shopper retrying a key gets their original reservation back instead of a
-- second purchase. Never overwrites what survived (HSETNX); a user's
-- latest reservation is the greatest id (reservation ids are UUIDv7, whose
-- text sorts by time), whatever order the chunks come in. One chunk of
-- orders per call keeps each call short.
--
-- KEYS[1]  shoppers hash ("<user>:<key>" -> replay record, see record.lua;
--          "<user>|latest" -> latest reservation and next attempt, see
--          record.lua)
-- KEYS[2]  reservations hash (reservation -> record, see record.lua)
-- ARGV     groups of seven: reservation, user, quantity, reserved ms,
--          idempotency key, order, record status (confirmed | expired | released)
--
-- Returns the number of keys whose replay record was restored.

local restored = 0
for i = 1, #ARGV, 7 do
  local reservation, user, quantity, reserved_ms, key, order, status =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  restored = restored + redis.call('HSETNX', KEYS[1], user .. ':' .. key, encode_replay(reservation, quantity))
  redis.call('HSETNX', KEYS[2], reservation, encode_record(user, quantity, status, reserved_ms, key, '', order))
  raise_latest(KEYS[1], user, reservation)
end
return restored
