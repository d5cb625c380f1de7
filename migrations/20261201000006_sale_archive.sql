-- Retention: a closed sale's live keys leave Redis once PostgreSQL holds
-- everything (its allotment released, nothing pending, the retention
-- passed). Its Redis counters (attempts, refusals by reason, ...) exist
-- nowhere else, so they are kept here first; the stats of an archived sale
-- answer from them. archived_at is set once the keys are gone.
alter table flash_sales
    add column archived_counters jsonb,
    add column archived_at timestamptz;

-- A shopper's latest purchase in a sale, read from PostgreSQL once Redis
-- no longer holds the sale.
create index purchase_attempts_sale_user_idx
    on purchase_attempts (flash_sale_id, user_id, reserved_at desc);

-- The reconciler walks the sales not archived yet on every tick.
create index flash_sales_unarchived_idx on flash_sales (id) where archived_at is null;
