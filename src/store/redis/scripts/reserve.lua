-- reserve.lua: one purchase attempt, decided atomically in one round trip.
--
-- Order of checks: idempotency record -> sale armed -> the user's attempt
-- rate (across every API node) -> state and window (Redis server time) ->
-- per-user limit (units, not attempts) -> stock.
-- Nothing but the outcome counters and the user's next-attempt time (once
-- the rate check passed) is written unless every check passed; then stock
-- is taken, the user's units grow, and the reservation is recorded, added
-- to the time-ordered pending set, and bound to the idempotency key.
--
-- KEYS[1]  stock counter          KEYS[5]  pending set (zset: reservation -> reserved ms)
-- KEYS[2]  meta hash              KEYS[6]  idempotency hash ("<user>:<key>" -> replay record, record.lua)
-- KEYS[3]  buyers hash (user -> units held: pending + confirmed)
-- KEYS[4]  reservations hash (reservation -> record, see record.lua)
-- KEYS[7]  stats hash (counters by outcome)
-- KEYS[8]  latest hash (user -> latest reservation)
-- KEYS[9]  rate hash (user -> theoretical arrival time, microseconds)
-- ARGV[1]  user id
-- ARGV[2]  quantity (integer >= 1, checked by the caller)
-- ARGV[3]  idempotency key (charset checked by the caller; no '|')
-- ARGV[4]  reservation id to use if accepted
-- ARGV[5]  microseconds between attempts of one user (1e6 / per-second rate)
-- ARGV[6]  attempts one user may make at once (burst)
--
-- Returns one of (every element a string):
--   {'ACCEPTED', reservation, remaining, reserved_ms}
--   {'REPLAYED', reservation, status}     same key, same quantity: the first answer
--   {'KEY_REUSED'}                        same key, different quantity
--   {'NOT_ARMED'}                         no meta: the caller arms the sale and retries
--   {'RATE_LIMITED', wait_ms}             the user's attempts came too fast
--   {'NOT_ACTIVE', state}                 scheduled | paused | ended | cancelled
--   {'ABOVE_LIMIT', limit}                quantity alone exceeds the per-user limit
--   {'LIMIT', held, limit}
--   {'SOLD_OUT', remaining}

local user, quantity, key, reservation = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local idempotency_field = user .. ':' .. key

-- One counter per outcome; the stats add them up into the attempts (one
-- write per attempt rather than two).
local function count(outcome)
  redis.call('HINCRBY', KEYS[7], outcome, 1)
end

local first_reservation, first_quantity = decode_replay(redis.call('HGET', KEYS[6], idempotency_field))
if first_reservation then
  if first_quantity ~= quantity then
    count('rejected_key_reused')
    return {'KEY_REUSED'}
  end
  local _, _, status = decode_record(redis.call('HGET', KEYS[4], first_reservation))
  status = status or 'pending'
  count('replayed')
  return {'REPLAYED', first_reservation, status}
end

local meta = redis.call('HMGET', KEYS[2], 'state', 'starts_at_ms', 'ends_at_ms', 'per_user_limit')
local state, starts_at, ends_at, limit = meta[1], tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4])
if not state then
  return {'NOT_ARMED'}
end

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)

-- The per-user attempt limit of the whole cluster (GCRA): `burst` attempts
-- at once, then one per interval. Each node also limits on its own before
-- Redis; this one holds however a user's requests are spread over nodes.
local interval, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local tat = tonumber(redis.call('HGET', KEYS[9], user) or '0')
if tat < now_us then
  tat = now_us
end
local tolerance = interval * (burst - 1)
if tat - now_us > tolerance then
  count('rejected_rate_limited')
  return {'RATE_LIMITED', string.format('%.0f', math.ceil((tat - now_us - tolerance) / 1000))}
end
redis.call('HSET', KEYS[9], user, string.format('%.0f', tat + interval))

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
  count('rejected_not_active')
  return {'NOT_ACTIVE', state}
end

if quantity > limit then
  count('rejected_above_limit')
  return {'ABOVE_LIMIT', tostring(limit)}
end
local held = tonumber(redis.call('HGET', KEYS[3], user) or '0')
if held + quantity > limit then
  count('rejected_limit')
  return {'LIMIT', tostring(held), tostring(limit)}
end

local remaining = tonumber(redis.call('GET', KEYS[1]) or '0')
if remaining < quantity then
  count('rejected_sold_out')
  return {'SOLD_OUT', tostring(remaining)}
end

remaining = redis.call('DECRBY', KEYS[1], quantity)
redis.call('HINCRBY', KEYS[3], user, quantity)
redis.call('HSET', KEYS[4], reservation, encode_record(user, quantity, 'pending', now_ms, key))
redis.call('ZADD', KEYS[5], now_ms, reservation)
redis.call('HSET', KEYS[6], idempotency_field, encode_replay(reservation, quantity))
redis.call('HSET', KEYS[8], user, reservation)
count('accepted')
redis.call('HINCRBY', KEYS[7], 'units_reserved', quantity)
redis.call('HINCRBY', KEYS[7], 'pending_units', quantity)
return {'ACCEPTED', reservation, tostring(remaining), tostring(now_ms)}
