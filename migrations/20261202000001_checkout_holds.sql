-- Checkout holds (issue 20): a sale may give each buyer `hold_seconds` to
-- pay. Its orders are written `awaiting_payment` with `pay_by` (counted
-- from the reservation time Redis decided) and end exactly once: `paid` by
-- a signed payment webhook, `expired` by the worker's sweep, `cancelled` by
-- the shopper. An awaiting order counts in `confirmed_quantity` like a
-- sold one, so paid + awaiting never exceeds the allotment (I8); expiry
-- and cancellation give its units back in the same transaction.
set local lock_timeout = '5s';

alter table flash_sales
    add column hold_seconds integer,
    add constraint flash_sales_hold_seconds_bound
        check (hold_seconds is null or hold_seconds between 1 and 3600);

alter table orders
    add column pay_by timestamptz,
    add column ended_at timestamptz,
    -- When an ended hold's units were given back to Redis (stock, the
    -- shopper's allowance): null while that is still owed. PostgreSQL
    -- commits first; the sweep retries Redis until this is set.
    add column units_returned_at timestamptz,
    drop constraint orders_status_valid,
    add constraint orders_status_valid check (status in
        ('confirmed', 'cancelled', 'awaiting_payment', 'paid', 'expired')),
    add constraint orders_hold_has_deadline
        check (status not in ('awaiting_payment', 'paid', 'expired') or pay_by is not null);

-- The sweep's work: holds due, and ended holds whose units Redis still owes.
create index orders_holds_due_idx on orders (pay_by) where status = 'awaiting_payment';
create index orders_units_owed_idx on orders (ended_at)
    where status in ('expired', 'cancelled') and units_returned_at is null and pay_by is not null;

-- sale_buyers counts units held (awaiting or sold); an ended hold takes
-- its units back, and a buyer with none left has no row.

-- Every payment event the webhook accepted as authentic, once: a replay of
-- the same event id finds its row and changes nothing.
create table payment_events (
    event_id     text primary key,
    order_id     uuid,
    amount       bigint,
    currency     text,
    -- paid: the order was awaiting payment and is now paid;
    -- refund_required: the order had ended (expired, cancelled, or paid by
    --   another event) before this payment came: the money must go back;
    -- amount_mismatch: amount or currency differ from the order's (flagged,
    --   the order is unchanged);
    -- unknown_order: no such order (answered 200 so the provider stops).
    outcome      text not null,
    received_at  timestamptz not null default now(),
    constraint payment_events_outcome_valid check (outcome in
        ('paid', 'refund_required', 'amount_mismatch', 'unknown_order')),
    constraint payment_events_event_id_bound check (length(event_id) between 1 and 200)
);

create index payment_events_order_idx on payment_events (order_id);
create index payment_events_outcome_idx on payment_events (outcome)
    where outcome <> 'paid';

-- The invariants of a sale (first defined in 20261201000007) with holds:
-- only orders whose units are the buyer's (confirmed, awaiting payment,
-- paid) count as sold and in the ledgers; every order, whatever became of
-- it, is one reservation audited `confirmed`; a paid order has exactly one
-- payment event that paid it, and no other order has one.
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
        -- A reservation is audited `confirmed` exactly when it has an order.
        -- (whatever became of the order after: paid, expired, cancelled).
        (select count(*) from (select reservation_id, outcome from purchase_attempts
                               where flash_sale_id = sale) a
         full join ordered using (reservation_id)
         where coalesce(a.outcome = 'confirmed', false) <> (ordered.user_id is not null)) as audit_mismatches,
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

