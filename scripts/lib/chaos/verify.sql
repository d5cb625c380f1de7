-- What PostgreSQL says about one chaos sale (psql variable sale_id): the
-- invariants every checker shares (flash_sale_invariants, last defined in
-- migrations/20261206000001_the_order_is_the_record.sql), joined with
-- what the crowd's shoppers were told (its shoppers.jsonl on standard
-- input).
-- One JSON object on stdout.
create temp table shoppers (doc jsonb);
-- One JSON document per line; the delimiter and quote are bytes JSON never holds.
\copy shoppers (doc) from pstdin with (format csv, delimiter e'\x02', quote e'\x01')

with sold as (
    select reservation_id::text as reservation_id
    from orders where flash_sale_id = :'sale_id'
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
select flash_sale_invariants(:'sale_id') || jsonb_build_object(
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
    -- A key retried after the fault whose first reservation became an order
    -- must get that reservation back.
    'replays_named_other', (select count(*) from accepted
                            where has_order and retry_reservation_id is not null
                              and retry_reservation_id <> reservation_id));
