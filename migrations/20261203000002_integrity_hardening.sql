-- What a review of `batch_integrity` found the foreign keys still did
-- better; each is closed here.
-- * Tables are found in `public` only: a session's temporary table named
--   `users` or `orders` (pg_temp is searched first) cannot satisfy or
--   disarm a check.
-- * The insert check is planned afresh for each statement (EXECUTE): a
--   plan cached from a connection's first batch (a hash join over all
--   users for a large one) would be reused for every later batch.
-- * A delete or truncate checks under READ COMMITTED only: in a REPEATABLE
--   READ or SERIALIZABLE transaction its snapshot cannot see an order
--   committed after it began (a foreign key's check looks past the
--   snapshot; a trigger cannot), so there it is refused outright.
-- * TRUNCATE of a table that rows name is refused (row triggers do not
--   fire on it), as is a change of a sale's or a user's id.
set local lock_timeout = '5s';

create or replace function check_inserted_references() returns trigger
language plpgsql set search_path = public, pg_temp as $$
declare
    wanted bigint;
    found bigint;
begin
    execute 'select (select count(distinct flash_sale_id) from inserted),
                    (select count(*) from (select 1 from flash_sales
                                           where id in (select flash_sale_id from inserted)
                                           for key share) locked)'
        into wanted, found;
    if found < wanted then
        raise foreign_key_violation using
            message = format('insert into %I names a flash sale that does not exist', TG_TABLE_NAME);
    end if;
    if TG_ARGV[0] = 'sale_and_user' then
        execute 'select (select count(distinct user_id) from inserted),
                        (select count(*) from (select 1 from users
                                               where id in (select user_id from inserted)
                                               for key share) locked)'
            into wanted, found;
        if found < wanted then
            raise foreign_key_violation using
                message = format('insert into %I names a user that does not exist', TG_TABLE_NAME);
        end if;
    end if;
    return null;
end $$;

create or replace function refuse_reference_change() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    raise foreign_key_violation using
        message = format('the sale and user of a row of %I never change', TG_TABLE_NAME);
end $$;

-- Deletes and truncates of sales and users check what names them with
-- the transaction's snapshot, which sees every committed row only under
-- READ COMMITTED.
create function require_read_committed(what text) returns void
language plpgsql set search_path = public, pg_temp as $$
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        raise foreign_key_violation using
            message = format('%s only in a READ COMMITTED transaction: a later snapshot could miss the orders that name it', what);
    end if;
end $$;

create or replace function refuse_delete_of_referenced_sale() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    perform require_read_committed('deleting a flash sale');
    if exists (select 1 from orders where flash_sale_id = old.id)
       or exists (select 1 from sale_buyers where flash_sale_id = old.id)
       or exists (select 1 from purchase_attempts where flash_sale_id = old.id) then
        raise foreign_key_violation using
            message = format('flash sale %s has orders and cannot be deleted', old.id);
    end if;
    return old;
end $$;

create or replace function refuse_delete_of_referenced_user() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    perform require_read_committed('deleting a user');
    if exists (select 1 from orders where user_id = old.id)
       -- No index leads with user_id on sale_buyers (one would cost an
       -- entry per buyer); a buyer's row comes with an order, so this scan
       -- runs only for a user without orders (as a foreign key's check
       -- would have), and deletes are rare.
       or exists (select 1 from sale_buyers where user_id = old.id) then
        raise foreign_key_violation using
            message = format('user %s has orders and cannot be deleted', old.id);
    end if;
    return old;
end $$;

-- Stricter than the foreign keys: `truncate users, orders` in one
-- statement is refused too (the check runs before anything is emptied);
-- truncate the tables that name them first.
create function refuse_truncate_of_referenced() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    perform require_read_committed(format('truncating %I', TG_TABLE_NAME));
    if exists (select 1 from orders) or exists (select 1 from sale_buyers)
       or (TG_TABLE_NAME = 'flash_sales' and exists (select 1 from purchase_attempts)) then
        raise foreign_key_violation using
            message = format('%I is named by orders and cannot be truncated', TG_TABLE_NAME);
    end if;
    return null;
end $$;

create trigger flash_sales_keep_referenced_on_truncate
    before truncate on flash_sales
    for each statement execute function refuse_truncate_of_referenced();
create trigger users_keep_referenced_on_truncate
    before truncate on users
    for each statement execute function refuse_truncate_of_referenced();

create function refuse_id_change() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    raise foreign_key_violation using
        message = format('the id of a row of %I never changes: orders may name it', TG_TABLE_NAME);
end $$;

create trigger flash_sales_id_fixed
    before update of id on flash_sales
    for each row when (old.id is distinct from new.id)
    execute function refuse_id_change();
create trigger users_id_fixed
    before update of id on users
    for each row when (old.id is distinct from new.id)
    execute function refuse_id_change();
