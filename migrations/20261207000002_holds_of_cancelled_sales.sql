-- Cancelling a sale no longer ends its unpaid holds in the cancel's own
-- transaction (with a stampede's worth of holds it outlasted the bound and
-- the cancel could never commit); the hold sweep ends them. The sweep
-- finds them by sale: this index holds only orders awaiting payment, so
-- asking whether a cancelled sale still has any, every sweep, reads no
-- order that already ended (orders are never deleted, and a sale's ended
-- orders only grow). It costs an entry per order written awaiting payment,
-- in sales with a checkout hold only.
set local lock_timeout = '5s';

create index orders_awaiting_by_sale on orders (flash_sale_id) where status = 'awaiting_payment';
