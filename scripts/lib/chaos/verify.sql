-- What PostgreSQL says about one chaos sale, joined with what the crowd's
-- shoppers were told (scripts/chaos substitutes :sale_id and :shoppers).
-- One JSON object on stdout.
create temp table shoppers (doc jsonb);
-- One JSON document per line; the delimiter and quote are bytes JSON never holds.
\copy shoppers (doc) from ':shoppers' with (format csv, delimiter e'\x02', quote e'\x01')

with sale as (
    select f.allotted_quantity, f.confirmed_quantity, f.per_user_limit,
           s.total_quantity, s.available_quantity,
           -- Units of the product sold by any of its sales (end-then-resell
           -- sells one product in two sales).
           (select coalesce(sum(o.quantity), 0) from orders o
            join flash_sales other on other.id = o.flash_sale_id
            where other.product_id = f.product_id) as product_units_sold
    from flash_sales f join stocks s on s.product_id = f.product_id
    where f.id = ':sale_id'
), sold as (
    select reservation_id::text as reservation_id, user_id, quantity
    from orders where flash_sale_id = ':sale_id'
), told as (
    select doc ->> 'reservation_id' as reservation_id, doc ->> 'outcome' as outcome,
           doc ->> 'retry_reservation_id' as retry_reservation_id
    from shoppers where (doc ->> 'status')::int = 202
), retried as (
    -- A key sent again after the fault (wipe-and-retry) may be a new
    -- purchase when the first one died with Redis; the shopper saw its 202.
    select retry_reservation_id as reservation_id from told where retry_reservation_id is not null
), accepted as (
    select told.*, sold.reservation_id is not null as has_order
    from told left join sold using (reservation_id)
)
select json_build_object(
    'allotted', sale.allotted_quantity,
    'orders', (select count(*) from sold),
    'units_sold', (select coalesce(sum(quantity), 0) from sold),
    'oversold', greatest(0, (select coalesce(sum(quantity), 0) from sold) - sale.allotted_quantity),
    'over_limit_buyers', (select count(*) from (select user_id from sold group by user_id
                                                having sum(quantity) > sale.per_user_limit) over_limit),
    'confirmed_quantity_matches', sale.confirmed_quantity = (select coalesce(sum(quantity), 0) from sold),
    'product_stock_matches', sale.total_quantity - sale.available_quantity = sale.product_units_sold,
    'accepted', (select count(*) from accepted),
    'accepted_ordered', (select count(*) from accepted where has_order),
    'accepted_failed_visibly', (select count(*) from accepted where not has_order and outcome = 'failed'),
    'accepted_not_found', (select count(*) from accepted where not has_order and outcome = 'not_found'),
    -- A banned shopper cannot read how its reservation ended; PostgreSQL
    -- must have released it (purchase_attempts), or it is lost.
    'accepted_suspended_released', (select count(*) from accepted a
             where not has_order and outcome = 'suspended'
               and exists (select 1 from purchase_attempts p
                           where p.reservation_id::text = a.reservation_id and p.outcome = 'failed')),
    'lost', (select count(*) from accepted a
             where not has_order and coalesce(outcome, '') not in ('failed', 'not_found')
               and not (outcome = 'suspended'
                        and exists (select 1 from purchase_attempts p
                                    where p.reservation_id::text = a.reservation_id
                                      and p.outcome = 'failed'))),
    'told_confirmed_without_order', (select count(*) from accepted where outcome = 'confirmed' and not has_order),
    'told_failed_with_order', (select count(*) from accepted where outcome in ('failed', 'not_found') and has_order),
    'orders_nobody_was_told', (select count(*) from sold where reservation_id not in
                               (select reservation_id from told where reservation_id is not null
                                union all select reservation_id from retried)),
    -- A 202 is a promise: a reservation that then failed for lack of stock
    -- broke it (Redis had counted units PostgreSQL did not have).
    'promised_stock_refused', (select count(*) from purchase_attempts
                               where flash_sale_id = ':sale_id' and reason = 'no_stock'),
    -- A key retried after the fault whose first reservation became an order
    -- must get that reservation back.
    'replays_named_other', (select count(*) from accepted
                            where has_order and retry_reservation_id is not null
                              and retry_reservation_id <> reservation_id))
from sale;
