-- return_held.lua: give back the units of checkout holds that ended
-- without a payment (expired, or cancelled by the shopper), once
-- PostgreSQL has ended them and counted the units back there; and give
-- the waitlist offers PostgreSQL made from those units to their shoppers.
--
-- Idempotent: only a reservation whose record is still `confirmed` (its
-- order was written and held) or still `pending` (the worker committed the
-- order but has not told Redis yet) changes, and its record then says how
-- the hold ended (`expired`, or `released` for a cancel), so a retry
-- returns nothing twice and a late `confirm.lua` leaves it alone. A record
-- Redis no longer holds is skipped: arming after a loss of Redis rebuilt
-- the stock and the buyers from PostgreSQL, which already had these units
-- back. An offer is granted once: only while Redis has no record of it,
-- and whatever became of it since (PostgreSQL returns an ended offer's
-- units only after the hold it came from was returned here, so the grant
-- always comes first and the offer's own return undoes it).
--
-- The shopper's units always go back (they may buy again). The stock gets
-- back what no offer took: PostgreSQL gave exactly these units back and
-- handed the offered ones on. ARGV[3], the room PostgreSQL has left for
-- the sale, only bounds it (Redis's stock never above it): pending units
-- are not counted against the room here, since some of them may be orders
-- PostgreSQL committed and already counts. The room was read after ARGV[4],
-- what the stock had grown by then (the meta hash's `stock_grown`: every
-- return's units, and the allotment's growth when an operator adds stock).
-- Growth since may come from PostgreSQL changes made after the room was
-- read, so it widens the room: else a return running alongside another
-- worker's, or an operator's addition, would find its own units over the
-- room and write them off (hold-storm lost 148 units that way).
--
-- An offer counts its unit against its shopper's limit, becomes their
-- latest purchase unless they reserved since (reservation ids are UUIDv7:
-- the greater is the newer, as restore_orders.lua decides), and, if it
-- still awaits payment, is announced as an `order` event.
--
-- KEYS[1]  meta hash (its `stock` field is the counter)
-- KEYS[2]  buyers hash (user -> units held)
-- KEYS[3]  reservations hash (reservation -> record, see record.lua)
-- KEYS[4]  stats hash
-- KEYS[5]  pending set
-- KEYS[6]  shoppers hash (`<user>|latest` -> latest reservation and next
--          attempt, see record.lua)
-- ARGV[1]  sale id, for the events
-- ARGV[2]  pub/sub channel of the sale's events
-- ARGV[3]  room left in PostgreSQL for the sale
-- ARGV[4]  the meta hash's stock_grown before the room was read
-- ARGV[5]  how the holds ended: expired | cancelled
-- ARGV[6]  H, the number of ended holds
-- then H triples: reservation id, its order id, units of it offered on
-- then groups of 8, one per offer made from those holds: reservation id,
--   order id, user id, idempotency key, 1 if it still awaits payment, and
--   its terms for the event: pay by (Unix ms), amount, currency
--
-- Returns {returned holds, units back in stock, offers granted} (numbers).

local ended = ARGV[5]
local record_status = (ended == 'cancelled') and 'released' or 'expired'
local meta = redis.call('HMGET', KEYS[1], 'stock', 'stock_grown')
local stock = tonumber(meta[1] or '0')
local room = tonumber(ARGV[3]) + math.max(tonumber(meta[2] or '0') - tonumber(ARGV[4]), 0)
local holds_end = 6 + 3 * tonumber(ARGV[6])
local returned, restocked, granted = 0, 0, 0
for i = 7, holds_end, 3 do
  local reservation, order, offered = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local user, quantity, status, reserved_ms, key = decode_record(redis.call('HGET', KEYS[3], reservation))
  if user and (status == 'confirmed' or status == 'pending') then
    if status == 'pending' then
      redis.call('ZREM', KEYS[5], reservation)
      redis.call('HINCRBY', KEYS[4], 'pending_units', -quantity)
    end
    local freed = math.max(quantity - offered, 0)
    local restock = math.max(math.min(freed, room - stock), 0)
    if restock > 0 then
      stock = redis.call('HINCRBY', KEYS[1], 'stock', restock)
      restocked = restocked + restock
    end
    if restock < freed then
      redis.call('HINCRBY', KEYS[4], 'units_written_off', freed - restock)
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
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = holds_end + 1, #ARGV, 8 do
  local reservation, order, user, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HEXISTS', KEYS[3], reservation) == 0 then
    redis.call('HSET', KEYS[3], reservation, encode_record(user, 1, 'confirmed', now_ms, key, '', order))
    redis.call('HINCRBY', KEYS[2], user, 1)
    raise_latest(KEYS[6], user, reservation)
    granted = granted + 1
    if ARGV[i + 4] == '1' then
      redis.call('PUBLISH', ARGV[2], cjson.encode({
        type = 'order', sale_id = ARGV[1], reservation_id = reservation, order_id = order,
        user_id = user, status = 'awaiting_payment', pay_by_ms = tonumber(ARGV[i + 5]),
        amount = tonumber(ARGV[i + 6]), currency = ARGV[i + 7]
      }))
    end
  end
end
if returned > 0 then
  if ended == 'cancelled' then
    redis.call('HINCRBY', KEYS[4], 'holds_cancelled', returned)
  else
    redis.call('HINCRBY', KEYS[4], 'holds_expired', returned)
  end
  redis.call('HINCRBY', KEYS[4], 'units_returned', restocked)
  redis.call('HINCRBY', KEYS[1], 'stock_grown', restocked)
end
return {returned, restocked, granted}
