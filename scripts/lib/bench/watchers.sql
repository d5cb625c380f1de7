-- The purchase attempts of scripts/bench's watching shoppers (their user
-- ids on standard input, one per line; psql variable sale_id), as one JSON
-- object by user id: how each reservation ended and when.
create temp table watchers (user_id uuid);
\copy watchers (user_id) from pstdin

select coalesce(json_object_agg(user_id, json_build_object(
         'reservation_id', reservation_id, 'outcome', outcome,
         'reserved_at', extract(epoch from reserved_at), 'ended_at', extract(epoch from ended_at))), '{}')
from purchase_endings
where flash_sale_id = :'sale_id' and user_id in (select user_id from watchers);
