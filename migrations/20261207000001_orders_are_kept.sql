-- An order is the only record of a confirmed reservation since migration
-- 20261206000001 (no `confirmed` audit row beside it): deleting one, or
-- pointing it at another reservation, would erase a sale PostgreSQL
-- committed, and the invariants could no longer tell a lost purchase from
-- one never made. So neither is allowed, as a sale or a user that rows name
-- cannot be deleted (migration 20261203000001). What changes on an order
-- (its status as a hold is paid, expires or is cancelled) still changes.
-- A data-only pg_restore into a table with rows needs --disable-triggers,
-- as it already did.
set local lock_timeout = '5s';

create function refuse_losing_orders() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    raise restrict_violation using
        message = format('%s of orders refused: an order is the only record of its confirmed reservation',
                         lower(TG_OP)),
        hint = 'An order ends by its status (cancelled, expired); it is never removed.';
end $$;

create trigger orders_kept
    before delete on orders
    for each row
    execute function refuse_losing_orders();
create trigger orders_kept_on_truncate
    before truncate on orders
    for each statement
    execute function refuse_losing_orders();
create trigger orders_reservation_fixed
    before update of reservation_id on orders
    for each row when (old.reservation_id is distinct from new.reservation_id)
    execute function refuse_losing_orders();
