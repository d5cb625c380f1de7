-- return_held.lua: give back the units of checkout holds that ended
-- without a payment (expired, or cancelled by the shopper), once
-- PostgreSQL has ended them and counted the units back there.
--
-- Idempotent: only a reservation whose record is still `confirmed` (its
-- order was written and held) or still `pending` (the worker committed the
-- order but has not told Redis yet) changes, and its record then says how
-- the hold ended (`expired`, or `released` for a cancel), so a retry
-- returns nothing twice and a late `confirm.lua` leaves it alone. A record Redis no longer holds is skipped: arming after a
-- loss of Redis rebuilt the stock and the buyers from PostgreSQL, which
-- already had these units back.
--
-- The shopper's units always go back (they may buy again), and so does the
-- stock: PostgreSQL gave exactly these units back. ARGV[3], the room
-- PostgreSQL has left for the sale, only bounds it (Redis's stock never
-- above it): pending units are not counted against the room here, since
-- some of them may be orders PostgreSQL committed and already counts.
--
-- KEYS[1]  meta hash (its `stock` field is the counter)
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> record, see record.lua)
-- KEYS[4]  stats hash
-- KEYS[5]  pending set
-- ARGV[1]  sale id, for the events
-- ARGV[2]  pub/sub channel of the sale's events
-- ARGV[3]  room left in PostgreSQL for the sale
-- ARGV[4]  how the holds ended: expired | cancelled
-- ARGV[5..] pairs: reservation id, its order id
--
-- Returns {returned holds, units back in stock} (numbers).

local ended = ARGV[4]
local record_status = (ended == 'cancelled') and 'released' or 'expired'
local room = tonumber(ARGV[3])
local stock = tonumber(redis.call('HGET', KEYS[1], 'stock') or '0')
local returned, restocked = 0, 0
for i = 5, #ARGV, 2 do
  local reservation, order = ARGV[i], ARGV[i + 1]
  local user, quantity, status, reserved_ms, key = decode_record(redis.call('HGET', KEYS[3], reservation))
  if user and (status == 'confirmed' or status == 'pending') then
    if status == 'pending' then
      redis.call('ZREM', KEYS[5], reservation)
      redis.call('HINCRBY', KEYS[4], 'pending_units', -quantity)
    end
    local restock = math.max(math.min(quantity, room - stock), 0)
    if restock > 0 then
      stock = redis.call('HINCRBY', KEYS[1], 'stock', restock)
      restocked = restocked + restock
    end
    if restock < quantity then
      redis.call('HINCRBY', KEYS[4], 'units_written_off', quantity - restock)
    end
    if redis.call('HINCRBY', KEYS[2], user, -quantity) <= 0 then
      redis.call('HDEL', KEYS[2], user)
    end
    redis.call('HSET', KEYS[3], reservation, encode_record(user, quantity, record_status, reserved_ms, key, '', order))
    returned = returned + 1
    redis.call('PUBLISH', ARGV[2], cjson.encode({
      type = 'order', sale_id = ARGV[1], reservation_id = reservation, order_id = order,
      user_id = user, status = ended
    }))
  end
end
if returned > 0 then
  if ended == 'cancelled' then
    redis.call('HINCRBY', KEYS[4], 'holds_cancelled', returned)
  else
    redis.call('HINCRBY', KEYS[4], 'holds_expired', returned)
  end
  redis.call('HINCRBY', KEYS[4], 'units_returned', restocked)
end
return {returned, restocked}
