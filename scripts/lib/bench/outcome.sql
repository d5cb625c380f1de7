-- What PostgreSQL says about one bench sale (:sale_id is substituted by
-- scripts/bench), as one JSON object.
with sale as (
    select f.id, f.allotted_quantity, f.confirmed_quantity, s.total_quantity, s.available_quantity
    from flash_sales f join stocks s on s.product_id = f.product_id
    where f.id = ':sale_id'
), sold as (
    select count(*) as orders,
           coalesce(sum(quantity), 0) as units,
           count(distinct user_id) as buyers,
           extract(epoch from min(created_at)) as first_at,
           extract(epoch from max(created_at)) as last_at
    from orders where flash_sale_id = ':sale_id'
), ended as (
    select coalesce(json_object_agg(outcome, n), '{}') as by_outcome, coalesce(sum(n), 0) as total
    from (select outcome, count(*) as n from purchase_attempts
          where flash_sale_id = ':sale_id' group by outcome) o
)
select json_build_object(
    'allotted', sale.allotted_quantity,
    'confirmed_quantity', sale.confirmed_quantity,
    'stock_total', sale.total_quantity,
    'stock_available', sale.available_quantity,
    'orders', sold.orders,
    'units_sold', sold.units,
    'distinct_buyers', sold.buyers,
    'first_order_at', sold.first_at,
    'last_order_at', sold.last_at,
    'reservations_ended', ended.total,
    'ended_by_outcome', ended.by_outcome)
from sale, sold, ended;
