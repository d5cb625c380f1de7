-- cache_orders.lua: cache one page of a user's orders, unless the user's
-- orders changed since the page was read from PostgreSQL. The read left
-- its mark (cached_orders.lua); the worker deletes the user's cache when
-- it commits one of their orders, so a page read before that commit finds
-- no mark, or another read's, and is not stored.
--
-- KEYS[1]  the user's cached pages (hash page -> JSON, '#reading' -> mark)
-- ARGV[1]  the mark of the read that produced the page
-- ARGV[2]  page field
-- ARGV[3]  page JSON
--
-- Returns 1 if cached, 0 if the orders changed meanwhile.

if redis.call('HGET', KEYS[1], '#reading') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
