-- cached_orders.lua: one page of a user's cached orders, or, on a miss, a
-- mark that the caller is reading the page from PostgreSQL. Only the
-- latest reader's mark can store its page (cache_orders.lua), and the
-- worker deletes the whole hash when it commits one of the user's orders:
-- a page read before that commit finds its mark gone and is not cached.
-- The worker's delete costs nothing for the many buyers who never read
-- their orders (no key, nothing written).
--
-- KEYS[1]  the user's cached pages (hash: page -> JSON, '#reading' -> mark)
-- ARGV[1]  page field ("<page>:<per_page>"; never starts with '#')
-- ARGV[2]  this read's mark, unique per read
-- ARGV[3]  TTL of the cache, seconds (counted from its first miss)
--
-- Returns the page's JSON on a hit, nil on a miss.

local page = redis.call('HGET', KEYS[1], ARGV[1])
if page then
  return page
end
redis.call('HSET', KEYS[1], '#reading', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3], 'NX')
return false
