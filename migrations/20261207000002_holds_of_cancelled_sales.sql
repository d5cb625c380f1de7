-- Cancelling a sale no longer ends its unpaid holds in the cancel's own
-- transaction (with a stampede's worth of holds it outlasted the bound and
-- the cancel could never commit); the hold sweep ends them. This flag says
-- which sales still have holds for it to cancel: the cancel sets it on a
-- sale with a checkout hold, and the sweep clears it, under the product's
-- lock, once it found none left (a cancelled sale gains no hold: settlement
-- fails its reservations and the waitlist makes no offers). So the sweep
-- asks `flash_sales` each second, not the orders, and no index of orders
-- leads with the sale but the key one (tests/flash_sales.rs says why).
-- Sales cancelled before this migration had their holds ended with the
-- cancel: false.
set local lock_timeout = '5s';

alter table flash_sales add column holds_to_cancel boolean not null default false;
