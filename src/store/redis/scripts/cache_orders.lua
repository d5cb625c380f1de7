-- cache_orders.lua: cache one page of a user's orders, unless the user's
-- orders changed since the page was read from PostgreSQL. The worker bumps
-- the generation when it commits the user's orders; a page read before
-- that commit and stored after it would be stale for the whole TTL.
--
-- KEYS[1]  the user's cached pages (hash page -> JSON)
-- KEYS[2]  the user's orders generation (counter; absent = 0)
-- ARGV[1]  the generation seen before reading PostgreSQL
-- ARGV[2]  page field
-- ARGV[3]  page JSON
-- ARGV[4]  TTL of the cache, seconds (counted from its first page)
--
-- Returns 1 if cached, 0 if the orders changed meanwhile.

if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4], 'NX')
return 1
