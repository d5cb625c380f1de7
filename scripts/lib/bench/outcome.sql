-- What PostgreSQL says about one bench sale (psql variable sale_id), as one
-- JSON object: the invariants every checker shares (flash_sale_invariants,
-- last defined in migrations/20261206000001_the_order_is_the_record.sql)
-- and the bench's own figures: when the first reservation was made
-- (Redis's clock, in reserve.lua) and the orders came, and how the
-- reservations ended (purchase_endings).
select flash_sale_invariants(:'sale_id')
    || (select jsonb_build_object(
                   'first_order_at', extract(epoch from min(created_at)),
                   'last_order_at', extract(epoch from max(created_at)))
        from orders where flash_sale_id = :'sale_id')
    || (select jsonb_build_object(
                   'first_reservation_at', extract(epoch from min(reserved_at)))
        from purchase_endings where flash_sale_id = :'sale_id')
    || (select jsonb_build_object(
                   'reservations_ended', coalesce(sum(n), 0),
                   'ended_by_outcome', coalesce(jsonb_object_agg(outcome, n), '{}'))
        from (select outcome, count(*) as n from purchase_endings
              where flash_sale_id = :'sale_id' group by outcome) o);
