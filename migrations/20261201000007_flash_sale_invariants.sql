-- The invariants of one sale as PostgreSQL holds them (DESIGN.md §5: I1
-- no oversell, I3 the per-user limit, I4 each reservation ends once, and
-- the ledgers that must agree with the orders), defined once for every
-- checker: scripts/bench (scripts/lib/bench/outcome.sql), scripts/chaos
-- (scripts/lib/chaos/verify.sql) and the tests. What only Redis or the
-- shoppers know (what they were told, what is still pending) stays with
-- each checker.
--
-- One jsonb document: the figures, `checks` (each named check, true when
-- it holds) and `passed` (all of them). Null for an unknown sale.
-- Read-only; fine on a live sale (orders, the audit rows and every ledger
-- move in one transaction).
create function flash_sale_invariants(sale uuid) returns jsonb
language sql stable as $$
with target as (
    select f.product_id, f.allotted_quantity, f.confirmed_quantity, f.per_user_limit,
           s.total_quantity, s.available_quantity
    from flash_sales f join stocks s on s.product_id = f.product_id
    where f.id = sale
), sold as (
    select reservation_id, user_id, quantity from orders where flash_sale_id = sale
), per_buyer as (
    select user_id, sum(quantity) as units from sold group by user_id
), figures as (
    select t.*,
        (select count(*) from sold) as orders,
        (select coalesce(sum(quantity), 0) from sold) as units_sold,
        (select count(*) from per_buyer) as distinct_buyers,
        -- orders_reservation_id_key makes this 0; checked all the same.
        (select count(*) - count(distinct reservation_id) from sold) as orders_sharing_a_reservation,
        (select count(*) from per_buyer where units > t.per_user_limit) as over_limit_buyers,
        (select coalesce(sum(units - t.per_user_limit), 0) from per_buyer
         where units > t.per_user_limit) as units_over_limit,
        -- Units of the product sold by any of its sales (one product may
        -- be sold by several: a resale after an end).
        (select coalesce(sum(o.quantity), 0) from orders o
         join flash_sales other on other.id = o.flash_sale_id
         where other.product_id = t.product_id) as product_units_sold,
        -- sale_buyers (what the limit constraint sees) against the orders.
        (select count(*) from per_buyer
         full join (select user_id, units from sale_buyers where flash_sale_id = sale) b using (user_id)
         where per_buyer.units is distinct from b.units) as sale_buyers_mismatches,
        -- A reservation is audited `confirmed` exactly when it has an order.
        (select count(*) from (select reservation_id, outcome from purchase_attempts
                               where flash_sale_id = sale) a
         full join sold using (reservation_id)
         where coalesce(a.outcome = 'confirmed', false) <> (sold.user_id is not null)) as audit_mismatches,
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
    'no_promised_stock_refused', c.promised_stock_refused = 0) as checks) k
$$;

comment on function flash_sale_invariants(uuid) is
    'The invariants of one sale in PostgreSQL (figures, checks, passed) as jsonb; see its migration.';
