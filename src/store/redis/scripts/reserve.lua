-- reserve.lua: one purchase attempt, decided atomically in one round trip.
--
-- Order of checks: idempotency record -> sale armed -> the user's attempt
-- rate (across every API node) -> state and window (Redis server time) ->
-- per-user limit (units, not attempts) -> stock.
-- Nothing but the outcome counter and the user's next-attempt time (once
-- the rate check passed) is written unless every check passed; then stock
-- is taken, the user's units grow, and the reservation is recorded, added
-- to the time-ordered pending set, and bound to the idempotency key.
--
-- Every redis.call costs ~2 µs of Redis CPU from Lua, so the data is laid
-- out to need few (issue 19): the stock is a field of the meta hash (one
-- read with the state, window and limit), and what the sale knows per
-- shopper besides units is one hash (one read, one write).
--
-- Numbers go to Redis as the text they came in as (ARGV, replies), and
-- those the script computed go back as integer replies: Lua turns a number
-- into text with printf's double formatting, which with the parsing of
-- numbers was ~8 % of Redis's samples running this script (issue 19).
-- One number is still formatted: the next-attempt time.
--
-- KEYS[1]  meta hash: state, starts_at_ms, ends_at_ms, per_user_limit, stock, ...
-- KEYS[2]  buyers hash (user -> units held: pending + confirmed)
-- KEYS[3]  reservations hash (reservation -> record, see record.lua)
-- KEYS[4]  pending set (zset: reservation -> reserved ms)
-- KEYS[5]  shoppers hash: "<user>:<key>" -> replay record (record.lua),
--          "<user>|latest" -> the user's latest reservation and when their
--          next attempt is due (GCRA, µs; encode_latest in record.lua)
-- KEYS[6]  stats hash (counters by outcome)
-- ARGV[1]  user id
-- ARGV[2]  quantity (integer >= 1, checked by the caller)
-- ARGV[3]  idempotency key (charset checked by the caller; no '|')
-- ARGV[4]  reservation id to use if accepted
-- ARGV[5]  microseconds between attempts of one user (1e6 / per-second rate)
-- ARGV[6]  attempts one user may make at once (burst)
--
-- Returns one of (remaining and reserved_ms of ACCEPTED and wait_ms as
-- integer replies, everything else as strings):
--   {'ACCEPTED', reservation, remaining, reserved_ms}
--   {'REPLAYED', reservation, status}     same key, same quantity: the first answer
--   {'KEY_REUSED'}                        same key, different quantity
--   {'NOT_ARMED'}                         no meta: the caller arms the sale and retries
--   {'RATE_LIMITED', wait_ms}             the user's attempts came too fast
--   {'NOT_ACTIVE', state}                 scheduled | paused | ended | cancelled
--   {'ABOVE_LIMIT', limit}                quantity alone exceeds the per-user limit
--   {'LIMIT', held, limit}
--   {'SOLD_OUT', remaining}

-- The quantity as given (written as it is) and as a number (compared).
local user, quantity_text, key, reservation = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local quantity = tonumber(quantity_text)
local replay_field, shopper_field = user .. ':' .. key, latest_field(user)

-- One counter per outcome; the stats add them up into the attempts (one
-- write per attempt rather than two).
local function count(outcome)
  redis.call('HINCRBY', KEYS[6], outcome, '1')
end

local shopper = redis.call('HMGET', KEYS[5], replay_field, shopper_field)
local first_reservation, first_quantity = decode_replay(shopper[1])
if first_reservation then
  if first_quantity ~= quantity then
    count('rejected_key_reused')
    return {'KEY_REUSED'}
  end
  local _, _, status, _, _, _, order = decode_record(redis.call('HGET', KEYS[3], first_reservation))
  status = status or 'pending'
  -- A reservation that became an order replays as confirmed, whatever
  -- became of the order since (a checkout hold that expired or was
  -- cancelled): the purchase was decided.
  if order and order ~= '' then
    status = 'confirmed'
  end
  count('replayed')
  return {'REPLAYED', first_reservation, status}
end

local meta = redis.call('HMGET', KEYS[1], 'state', 'starts_at_ms', 'ends_at_ms', 'per_user_limit', 'stock')
local state, starts_at, ends_at, limit, remaining =
  meta[1], tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4]), tonumber(meta[5])
if not state or not remaining then
  return {'NOT_ARMED'}
end

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)

-- The per-user attempt limit of the whole cluster (GCRA): `burst` attempts
-- at once, then one per interval. Each node also limits on its own before
-- Redis; this one holds however a user's requests are spread over nodes.
local interval, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local latest, due = decode_latest(shopper[2])
local tat = tonumber(due) or 0
if tat < now_us then
  tat = now_us
end
local tolerance = interval * (burst - 1)
if tat - now_us > tolerance then
  count('rejected_rate_limited')
  return {'RATE_LIMITED', math.ceil((tat - now_us - tolerance) / 1000)}
end
local next_due = string.format('%.0f', tat + interval)

-- Every refusal from here on uses up the user's rate, sold out included:
-- a SOLD_OUT answer that wrote nothing would let a user with several
-- sign-ins (several nodes' limiters) poll a sold-out sale several times as
-- often and catch units that come back first. Leaving that write out saved
-- ~6 µs of Redis per refusal (issue 19) and was not kept for that reason
-- (docs/decisions.md).
local function refuse(outcome, ...)
  redis.call('HSET', KEYS[5], shopper_field, encode_latest(latest, next_due))
  count(outcome)
  return {...}
end

if state == 'scheduled' or state == 'active' then
  if now_ms < starts_at then
    state = 'scheduled'
  elseif now_ms >= ends_at then
    state = 'ended'
  else
    state = 'active'
  end
end
if state ~= 'active' then
  return refuse('rejected_not_active', 'NOT_ACTIVE', state)
end

if quantity > limit then
  return refuse('rejected_above_limit', 'ABOVE_LIMIT', meta[4])
end
local held = redis.call('HGET', KEYS[2], user) or '0'
if tonumber(held) + quantity > limit then
  return refuse('rejected_limit', 'LIMIT', held, meta[4])
end

if remaining < quantity then
  return refuse('rejected_sold_out', 'SOLD_OUT', meta[5])
end

-- now_ms as text without formatting a number: TIME's seconds, then its
-- microseconds' first three digits. The answer carries the same time as a
-- number (an integer reply).
local micros = time[2]
local reserved_ms_text = time[1] .. string.sub(string.rep('0', 6 - #micros) .. micros, 1, 3)
remaining = redis.call('HINCRBY', KEYS[1], 'stock', '-' .. quantity_text)
redis.call('HINCRBY', KEYS[2], user, quantity_text)
redis.call('HSET', KEYS[3], reservation,
  encode_record(user, quantity_text, 'pending', reserved_ms_text, key))
redis.call('ZADD', KEYS[4], reserved_ms_text, reservation)
redis.call('HSET', KEYS[5], replay_field, encode_replay(reservation, quantity_text),
  shopper_field, encode_latest(reservation, next_due))
count('accepted')
redis.call('HINCRBY', KEYS[6], 'pending_units', quantity_text)
return {'ACCEPTED', reservation, remaining, now_ms}
