-- confirm.lua: mark reservations whose orders PostgreSQL has committed as
-- confirmed, drop them from the pending set, count them, and tell the
-- sale's subscribers each shopper's outcome, with the order and what a
-- shopper needs to work out its hold's terms (remaining stock does not change
-- here; API nodes read it from Redis every ~100 ms). Idempotent: only
-- pending reservations change, so a redelivered batch counts nothing twice.
-- Reservations Redis no longer knows (it lost its data) are skipped:
-- PostgreSQL holds their orders.
--
-- Runs once per group commit over hundreds of reservations, so it reads and
-- writes them a chunk at a time (one HMGET, one HSET, one ZREM per chunk)
-- rather than three commands each, and writes each event by concatenation:
-- every value in it is a UUID or a number (issue 19).
--
-- KEYS[1]  reservations hash (reservation -> record, see record.lua)
-- KEYS[2]  pending set
-- KEYS[3]  stats hash
-- ARGV[1]  sale id, for the events
-- ARGV[2]  pub/sub channel of the sale's events
-- ARGV[3..] pairs: reservation id, its order id ('' when not known)
--
-- Returns the number of reservations confirmed by this call.

-- Reservations per chunk: keeps each command's arguments far below what
-- Lua's unpack can pass (about 8,000).
local CHUNK = 500

local function purchase_event(reservation, user, quantity, reserved_ms, order)
  return '{"type":"purchase","sale_id":"' .. ARGV[1] .. '","reservation_id":"' .. reservation
    .. '","user_id":"' .. user .. '","status":"confirmed"'
    .. ((order ~= '') and (',"order_id":"' .. order .. '"') or '')
    .. ',"quantity":' .. quantity .. ',"reserved_ms":' .. reserved_ms .. '}'
end

local confirmed, units, seen = 0, 0, {}
for first = 3, #ARGV, 2 * CHUNK do
  local last = math.min(first + 2 * CHUNK - 1, #ARGV)
  local ids = {}
  for i = first, last, 2 do
    ids[#ids + 1] = ARGV[i]
  end
  local records = redis.call('HMGET', KEYS[1], unpack(ids))
  local writes, settled, events = {}, {}, {}
  for n = 1, #ids do
    local reservation, order = ids[n], ARGV[first + 2 * n - 1] or ''
    local user, quantity, status, reserved_ms, key = decode_record(records[n])
    -- A chunk's records are all read before any is written, so one named
    -- twice in a chunk reads pending both times: `seen` confirms it once.
    -- (Named again in a later chunk, it already reads confirmed.) A record
    -- whose numbers do not read is left as it is, like an unknown one.
    if status == 'pending' and quantity and tonumber(reserved_ms) and not seen[reservation] then
      seen[reservation] = true
      writes[#writes + 1] = reservation
      writes[#writes + 1] = encode_record(user, quantity, 'confirmed', reserved_ms, key, '', order)
      settled[#settled + 1] = reservation
      events[#events + 1] = purchase_event(reservation, user, quantity, reserved_ms, order)
      confirmed = confirmed + 1
      units = units + quantity
    end
  end
  if #settled > 0 then
    redis.call('HSET', KEYS[1], unpack(writes))
    redis.call('ZREM', KEYS[2], unpack(settled))
    -- Told only once written: a write Redis refuses (out of memory)
    -- publishes nothing.
    for _, event in ipairs(events) do
      redis.call('PUBLISH', ARGV[2], event)
    end
  end
end
if confirmed > 0 then
  redis.call('HINCRBY', KEYS[3], 'confirmed', confirmed)
  redis.call('HINCRBY', KEYS[3], 'units_confirmed', units)
  redis.call('HINCRBY', KEYS[3], 'pending_units', -units)
end
return confirmed
