-- How a bench sale's checkout holds ended (psql variable sale_id), as one
-- JSON object: paid, expired, still awaiting; when the expiries came and
-- how long after each deadline's 2 s grace (the sweep's lag); and whether
-- the sale's invariants hold afterwards.
select jsonb_build_object(
           'paid', count(*) filter (where status = 'paid'),
           'expired', count(*) filter (where status = 'expired'),
           'awaiting', count(*) filter (where status = 'awaiting_payment'),
           'first_expired_at', extract(epoch from min(ended_at) filter (where status = 'expired')),
           'last_expired_at', extract(epoch from max(ended_at) filter (where status = 'expired')),
           'expiry_lag_ms', jsonb_build_object(
               'p50', round((percentile_cont(0.5) within group (order by lag_ms)
                             filter (where status = 'expired'))::numeric),
               'p99', round((percentile_cont(0.99) within group (order by lag_ms)
                             filter (where status = 'expired'))::numeric),
               'max', round(max(lag_ms) filter (where status = 'expired')::numeric)),
           'units_owed_to_redis', count(*) filter (where status = 'expired' and units_returned_at is null),
           'invariants_passed', (flash_sale_invariants(:'sale_id') ->> 'passed')::boolean)
from (select status, ended_at, units_returned_at,
             extract(epoch from ended_at - pay_by) * 1000 - 2000 as lag_ms
      from orders where flash_sale_id = :'sale_id') o;
