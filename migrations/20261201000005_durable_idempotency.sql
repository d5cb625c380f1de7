-- One order per (sale, shopper, Idempotency-Key): a key stays one purchase
-- even after Redis lost its replay record (a wipe, or the last second of
-- its append-only file). Settlement fails a second reservation of the same
-- key instead of committing it, and arming restores the replay records of
-- committed orders so that a retry gets its first reservation back.
create unique index orders_sale_user_key on orders (flash_sale_id, user_id, idempotency_key);

-- Orders of a sale newest first, a page at a time (restoring after a
-- loss); also serves every lookup by sale the old index did.
create index orders_flash_sale_id_idx on orders (flash_sale_id, id);
drop index orders_flash_sale_idx;
