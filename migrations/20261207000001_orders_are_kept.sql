-- An order is the only record of a confirmed reservation since migration
-- 20261206000001 (no `confirmed` audit row beside it): deleting one,
-- pointing it at another reservation, or renumbering it (its payments name
-- it) would erase a sale PostgreSQL committed, and the invariants could no longer tell a lost purchase from
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
-- An order's id is what payment events name (payment_events.order_id).
create trigger orders_identity_fixed
    before update of id, reservation_id on orders
    for each row when (old.id is distinct from new.id
                       or old.reservation_id is distinct from new.reservation_id)
    execute function refuse_losing_orders();
