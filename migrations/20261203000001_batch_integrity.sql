-- Referential integrity checked once per statement instead of once per row
-- (issue 19). Settlement inserts a batch of orders, their buyers' rows and
-- their audit rows in three statements; as foreign keys, each row ran its
-- own check query against `flash_sales` and `users` (five per order), which
-- was half of PostgreSQL's cost of an order (`EXPLAIN ANALYZE` of 10,000
-- orders: 38 µs of 70 µs per order in the constraints' triggers).
--
-- The guarantees are the foreign keys':
-- * After each insert statement, one query per referenced table locks the
--   named rows `for key share` (as a foreign key's check does, so a
--   concurrent delete waits for this transaction, or this check sees the
--   row gone) and refuses the statement, with the foreign key's SQLSTATE
--   23503, when one is missing. It is planned per statement (EXECUTE): a
--   plan cached from a connection's first batch would serve every size.
-- * A sale or a user that rows name cannot be deleted or truncated away
--   (23503). The check reads with the transaction's snapshot, which sees
--   every committed row only under READ COMMITTED (a foreign key's check
--   looks past the snapshot; a trigger cannot), so elsewhere it refuses
--   outright.
-- * Ids and the rows' references never change (stricter than the foreign
--   keys, which let a row move to another existing sale or user).
-- * The functions look in `public` only: a session's temporary table named
--   `users` or `orders` (pg_temp is searched first) cannot satisfy or
--   disarm a check.
-- Two effects for operators (docs/decisions.md): `truncate users, orders`
-- in one statement is refused (truncate the naming tables first), and a
-- data-only pg_restore needs --disable-triggers.
set local lock_timeout = '5s';

alter table orders
    drop constraint orders_flash_sale_fkey,
    drop constraint orders_user_fkey;
alter table sale_buyers
    drop constraint sale_buyers_flash_sale_fkey,
    drop constraint sale_buyers_user_fkey;
alter table purchase_attempts
    drop constraint purchase_attempts_flash_sale_fkey;

-- TG_ARGV: pairs of (column of the inserted rows, table whose id it names).
create function check_inserted_references() returns trigger
language plpgsql set search_path = public, pg_temp as $$
declare
    wanted bigint;
    found bigint;
begin
    for i in 0 .. TG_NARGS - 1 by 2 loop
        execute format(
            'select (select count(distinct %1$I) from inserted),
                    (select count(*) from (select 1 from %2$I
                                           where id in (select %1$I from inserted)
                                           for key share) locked)',
            TG_ARGV[i], TG_ARGV[i + 1])
            into wanted, found;
        if found < wanted then
            raise foreign_key_violation using
                message = format('insert into %I names a row of %I that does not exist (%I)',
                                 TG_TABLE_NAME, TG_ARGV[i + 1], TG_ARGV[i]);
        end if;
    end loop;
    return null;
end $$;

create trigger orders_references_exist
    after insert on orders referencing new table as inserted
    for each statement
    execute function check_inserted_references('flash_sale_id', 'flash_sales', 'user_id', 'users');
create trigger sale_buyers_references_exist
    after insert on sale_buyers referencing new table as inserted
    for each statement
    execute function check_inserted_references('flash_sale_id', 'flash_sales', 'user_id', 'users');
-- An audit row keeps the id of a user who may since be gone.
create trigger purchase_attempts_references_exist
    after insert on purchase_attempts referencing new table as inserted
    for each statement
    execute function check_inserted_references('flash_sale_id', 'flash_sales');

-- TG_ARGV[0]: what never changes, for the message.
create function refuse_reference_change() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    raise foreign_key_violation using
        message = format('the %s of a row of %I never change: other rows name it', TG_ARGV[0], TG_TABLE_NAME);
end $$;

create trigger orders_references_fixed
    before update of flash_sale_id, user_id on orders
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id
                       or old.user_id is distinct from new.user_id)
    execute function refuse_reference_change('sale and user');
create trigger sale_buyers_references_fixed
    before update of flash_sale_id, user_id on sale_buyers
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id
                       or old.user_id is distinct from new.user_id)
    execute function refuse_reference_change('sale and user');
create trigger purchase_attempts_references_fixed
    before update of flash_sale_id on purchase_attempts
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id)
    execute function refuse_reference_change('sale');
create trigger flash_sales_id_fixed
    before update of id on flash_sales
    for each row when (old.id is distinct from new.id)
    execute function refuse_reference_change('id');
create trigger users_id_fixed
    before update of id on users
    for each row when (old.id is distinct from new.id)
    execute function refuse_reference_change('id');

-- The referenced side: what `on delete no action` did, for a row's delete
-- (it has locked the row when this runs, so an insert that named it either
-- committed before and is seen here, or waits and then finds it gone) and
-- for a truncate. TG_ARGV: the naming column, then the naming tables.
-- No index leads with user_id on sale_buyers (one would cost an entry per
-- buyer); a buyer's row comes with an order, so that scan runs only for a
-- user without orders, as a foreign key's check would have.
create function refuse_losing_named_rows() returns trigger
language plpgsql set search_path = public, pg_temp as $$
declare
    named boolean;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        raise foreign_key_violation using
            message = format('%s of %I only in a READ COMMITTED transaction: a later snapshot could miss the rows that name it',
                             lower(TG_OP), TG_TABLE_NAME);
    end if;
    for i in 1 .. TG_NARGS - 1 loop
        if TG_OP = 'DELETE' then
            execute format('select exists (select 1 from %I where %I = $1)', TG_ARGV[i], TG_ARGV[0])
                into named using old.id;
        else
            execute format('select exists (select 1 from %I)', TG_ARGV[i]) into named;
        end if;
        if named then
            raise foreign_key_violation using
                message = format('rows of %I name %I: %s refused', TG_ARGV[i], TG_TABLE_NAME, lower(TG_OP));
        end if;
    end loop;
    if TG_OP = 'DELETE' then
        return old;
    end if;
    return null;
end $$;

create trigger flash_sales_keep_named
    before delete on flash_sales
    for each row
    execute function refuse_losing_named_rows('flash_sale_id', 'orders', 'sale_buyers', 'purchase_attempts');
create trigger flash_sales_keep_named_on_truncate
    before truncate on flash_sales
    for each statement
    execute function refuse_losing_named_rows('flash_sale_id', 'orders', 'sale_buyers', 'purchase_attempts');
create trigger users_keep_named
    before delete on users
    for each row
    execute function refuse_losing_named_rows('user_id', 'orders', 'sale_buyers');
create trigger users_keep_named_on_truncate
    before truncate on users
    for each statement
    execute function refuse_losing_named_rows('user_id', 'orders', 'sale_buyers');
