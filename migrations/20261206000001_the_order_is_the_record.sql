-- Issue 19: the order is the record of a confirmed reservation. Settlement
-- wrote a `purchase_attempts` row for every reservation it decided, the
-- confirmed ones too, though each of those also got an order naming its
-- reservation: a second row and two more index entries per purchase, and
-- a statement and its reference check per batch: ~15 µs of PostgreSQL's
-- ~69 of statement time per order, ~12 net of the column this adds to
-- the order (BENCHMARKS.md "The order is the record"). From this
-- migration on:
-- * a confirmed reservation is recorded by its order alone, which now
--   keeps when it was reserved (`reserved_at`: Redis's clock for a
--   purchase, the offer's time for a waitlist offer; null on orders from
--   before, whose `confirmed` row has it);
-- * `purchase_attempts` records the reservations that ended without an
--   order (settlement writes `failed`); rows written `confirmed` before
--   stay;
-- * `purchase_endings` is the trail DESIGN.md names: every reservation
--   PostgreSQL decided and how it ended, one row each, orders included.
--   Its `ended_at` is when the reservation was settled (the order's
--   `created_at`), not `orders.ended_at` (when a checkout hold ended).
--   Status reads after Redis lost a record, scripts/bench and the test
--   kit read it; the checks that look for failures read the table.
set local lock_timeout = '5s';

alter table orders add column reserved_at timestamptz;

create view purchase_endings as
select a.reservation_id, a.flash_sale_id, a.user_id, a.quantity, a.outcome, a.reason,
       a.reserved_at, a.ended_at, null::uuid as order_id
from purchase_attempts a
where a.outcome <> 'confirmed'
union all
-- An order from before this migration has no reserved_at of its own: its
-- `confirmed` row has it. An order with neither (written by hand: no
-- writer of this schema leaves both out) was reserved no later than it
-- was made.
select o.reservation_id, o.flash_sale_id, o.user_id, o.quantity, 'confirmed', null,
       coalesce(o.reserved_at,
                (select a.reserved_at from purchase_attempts a
                 where a.reservation_id = o.reservation_id and a.outcome = 'confirmed'),
                o.created_at),
       o.created_at, o.id
from orders o;

-- The invariants of a sale (20261202000001), the audit check reading
-- `purchase_attempts` as it is now written.
create or replace function flash_sale_invariants(sale uuid) returns jsonb
language sql stable as $$
with target as (
    select f.product_id, f.allotted_quantity, f.confirmed_quantity, f.per_user_limit,
           s.total_quantity, s.available_quantity
    from flash_sales f join stocks s on s.product_id = f.product_id
    where f.id = sale
), ordered as (
    select id, reservation_id, user_id, quantity, status from orders where flash_sale_id = sale
), sold as (
    -- Orders whose units are the buyer's: sold, or held until they pay.
    select reservation_id, user_id, quantity from ordered
    where status in ('confirmed', 'awaiting_payment', 'paid')
), paid_events as (
    select order_id, count(*) as events from payment_events
    where outcome = 'paid' and order_id in (select id from ordered)
    group by order_id
), per_buyer as (
    select user_id, sum(quantity) as units from sold group by user_id
), figures as (
    select t.*,
        (select count(*) from sold) as orders,
        (select coalesce(sum(quantity), 0) from sold) as units_sold,
        (select count(*) from per_buyer) as distinct_buyers,
        -- orders_reservation_id_key makes this 0; checked all the same.
        (select count(*) - count(distinct reservation_id) from ordered) as orders_sharing_a_reservation,
        (select count(*) from per_buyer where units > t.per_user_limit) as over_limit_buyers,
        (select coalesce(sum(units - t.per_user_limit), 0) from per_buyer
         where units > t.per_user_limit) as units_over_limit,
        -- Units of the product sold by any of its sales (one product may
        -- be sold by several: a resale after an end).
        (select coalesce(sum(o.quantity), 0) from orders o
         join flash_sales other on other.id = o.flash_sale_id
         where other.product_id = t.product_id
           and o.status in ('confirmed', 'awaiting_payment', 'paid')) as product_units_sold,
        -- sale_buyers (what the limit constraint sees) against the orders.
        (select count(*) from per_buyer
         full join (select user_id, units from sale_buyers where flash_sale_id = sale) b using (user_id)
         where per_buyer.units is distinct from b.units) as sale_buyers_mismatches,
        -- A reservation with an order ended confirmed (whatever became of
        -- the order after: paid, expired, cancelled), so no other ending may
        -- be recorded for it; a `confirmed` row (written before
        -- 20261206000001) must name a reservation that has an order.
        (select count(*) from (select reservation_id, outcome from purchase_attempts
                               where flash_sale_id = sale) a
         left join ordered using (reservation_id)
         where (a.outcome = 'confirmed') <> (ordered.user_id is not null)) as audit_mismatches,
        -- Checkout holds (I8): each ends once, and only a payment pays.
        (select count(*) from ordered where status = 'awaiting_payment') as holds_awaiting,
        (select count(*) from ordered where status = 'paid') as holds_paid,
        (select count(*) from ordered where status = 'expired') as holds_expired,
        (select count(*) from ordered where status = 'cancelled') as holds_cancelled,
        (select count(*) from ordered o left join paid_events p on p.order_id = o.id
         where (o.status = 'paid') <> (coalesce(p.events, 0) = 1)) as payments_mismatched,
        -- A 202 is a promise: a reservation that then failed for lack of
        -- stock broke it (Redis had counted units PostgreSQL did not have).
        (select count(*) from purchase_attempts
         where flash_sale_id = sale and reason = 'no_stock') as promised_stock_refused
    from target t
), checked as (
    select f.*,
        greatest(0, f.units_sold - f.allotted_quantity) as oversold,
        f.confirmed_quantity = f.units_sold as confirmed_quantity_matches,
        f.total_quantity - f.available_quantity = f.product_units_sold as product_stock_matches
    from figures f
)
select jsonb_build_object(
    'sale_id', sale,
    'allotted', c.allotted_quantity,
    'per_user_limit', c.per_user_limit,
    'confirmed_quantity', c.confirmed_quantity,
    'stock_total', c.total_quantity,
    'stock_available', c.available_quantity,
    'orders', c.orders,
    'units_sold', c.units_sold,
    'distinct_buyers', c.distinct_buyers,
    'product_units_sold', c.product_units_sold,
    'oversold', c.oversold,
    'over_limit_buyers', c.over_limit_buyers,
    'units_over_limit', c.units_over_limit,
    'orders_sharing_a_reservation', c.orders_sharing_a_reservation,
    'confirmed_quantity_matches', c.confirmed_quantity_matches,
    'product_stock_matches', c.product_stock_matches,
    'sale_buyers_mismatches', c.sale_buyers_mismatches,
    'audit_mismatches', c.audit_mismatches,
    'promised_stock_refused', c.promised_stock_refused,
    'holds_awaiting', c.holds_awaiting,
    'holds_paid', c.holds_paid,
    'holds_expired', c.holds_expired,
    'holds_cancelled', c.holds_cancelled,
    'payments_mismatched', c.payments_mismatched,
    'checks', checks,
    'passed', (select bool_and(value::boolean) from jsonb_each_text(checks)))
from checked c,
lateral (select jsonb_build_object(
    'no_oversell', c.oversold = 0,
    'within_per_user_limit', c.over_limit_buyers = 0,
    'one_order_per_reservation', c.orders_sharing_a_reservation = 0,
    'ledgers_agree', c.confirmed_quantity_matches and c.product_stock_matches
                     and c.sale_buyers_mismatches = 0,
    'audit_agrees_with_orders', c.audit_mismatches = 0,
    'no_promised_stock_refused', c.promised_stock_refused = 0,
    'each_paid_order_paid_once', c.payments_mismatched = 0) as checks) k
$$;

