-- record.lua: the records a sale keeps in Redis, the one definition on the
-- Lua side: a reservation record, a replay record, and a shopper's latest
-- field. RedisStore puts this file in front of every script that reads or
-- writes them; `ReservationRecord::encode`/`parse`, and
-- `parse_latest` for the latest field, are the Rust
-- side, and tests/records.rs checks that both agree through every script.
--
-- "<user>|<quantity>|<status>|<reserved ms>|<idempotency key>|<reason code>|<order id>"
-- status: pending | confirmed | failed | released | expired
-- reason code: empty, or a FailureReason code (no '|'; never prose)
-- order id: the order of a confirmed reservation (so a status read needs
-- no PostgreSQL). Without one the record has six fields, as every record
-- had before: an older build still reads the reason of what this one writes.

local function encode_record(user, quantity, status, reserved_ms, key, reason, order)
  return user .. '|' .. quantity .. '|' .. status .. '|' .. reserved_ms .. '|' .. key .. '|'
    .. (reason or '') .. ((order and order ~= '') and ('|' .. order) or '')
end

-- Returns user, quantity (number), status, reserved_ms, key, reason, order
-- ('' when the record has six fields); or nothing for a missing or
-- unreadable record. One match reads both forms: the reason takes every
-- character up to the next '|' or the end, and an order follows only that
-- '|' (settlement decodes every record it confirms, issue 19).
local function decode_record(record)
  if not record then
    return nil
  end
  local user, quantity, status, reserved_ms, key, reason, order =
    string.match(record, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|?([^|]*)$')
  if not user then
    return nil
  end
  return user, tonumber(quantity), status, reserved_ms, key, reason, order
end

-- The idempotency record of one key: "<reservation>|<quantity>".
local function encode_replay(reservation, quantity)
  return reservation .. '|' .. quantity
end

-- Returns reservation, quantity (number); or nothing.
local function decode_replay(replay)
  if not replay then
    return nil
  end
  local reservation, quantity = string.match(replay, '^([^|]*)|([^|]*)$')
  return reservation, tonumber(quantity)
end

-- What the sale knows of a shopper besides their keys, in one field of the
-- shoppers hash, "<user>|latest": "<latest reservation>|<next attempt due,
-- µs>", either part possibly empty. reserve.lua reads it with the replay
-- record in one call and writes it back with it in one (issue 19: one
-- field per shopper, not two). The name is the one the latest reservation
-- had alone before: such a value reads as a reservation with no due time.
local function latest_field(user)
  return user .. '|latest'
end

local function encode_latest(reservation, next_due)
  return (reservation or '') .. '|' .. (next_due or '')
end

-- Returns the latest reservation and the next attempt's due time, each nil
-- when absent, and both nil for a value that does not read (more than one
-- '|'). The due time stays text, so it is written back without formatting a
-- number. One match reads both forms: the '|' and what follows are optional.
local function decode_latest(value)
  if not value then
    return nil, nil
  end
  local reservation, next_due = string.match(value, '^([^|]*)|?([^|]*)$')
  if reservation == '' then
    reservation = nil
  end
  if next_due == '' then
    next_due = nil
  end
  return reservation, next_due
end

-- Makes `reservation` the user's latest unless a newer one is (reservation
-- ids are UUIDv7: the greater text is the newer), keeping the due time.
local function raise_latest(shoppers, user, reservation)
  local field = latest_field(user)
  local latest, next_due = decode_latest(redis.call('HGET', shoppers, field))
  if not latest or latest < reservation then
    redis.call('HSET', shoppers, field, encode_latest(reservation, next_due))
  end
end
