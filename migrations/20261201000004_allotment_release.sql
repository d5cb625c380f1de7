-- A closed sale (ended or cancelled) keeps its unsold allotment promised
-- until none of its reservations can still commit: the worker commits a
-- pending reservation of an ended sale against the product's shared stock,
-- so handing those units to another sale at the moment of `end` would
-- promise them twice. The reconciler sets allotment_released_at once the
-- ended state is in Redis and nothing is pending there; from then on the
-- units are free for new sales and the sale commits nothing more. A
-- cancelled sale commits nothing after the cancel, so `cancel` sets it.
alter table flash_sales add column allotment_released_at timestamptz;

-- Sales closed before this migration have long been drained.
update flash_sales set allotment_released_at = updated_at
where state in ('ended', 'cancelled');

alter table flash_sales add constraint flash_sales_released_only_when_closed
    check (allotment_released_at is null or state in ('ended', 'cancelled'));
