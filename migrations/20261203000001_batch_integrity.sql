-- Referential integrity checked once per statement instead of once per row
-- (issue 19). Settlement inserts a batch of orders, their buyers' rows and
-- their audit rows in three statements; as foreign keys, each row ran its
-- own check query against `flash_sales` and `users` (five per order), which
-- was half of PostgreSQL's cost of an order (`EXPLAIN ANALYZE` of 10,000
-- orders: 38 µs of 70 µs per order in the constraints' triggers).
--
-- The guarantee is the foreign keys': no row names a sale or a user that
-- does not exist, and neither can be deleted while a row names it.
-- * After each insert statement, one query locks the named sales and users
--   `for key share` (as a foreign key's check does, so a concurrent delete
--   waits for this transaction, or this check sees the row gone) and
--   refuses the statement, with the foreign key's SQLSTATE 23503, when one
--   is missing.
-- * A sale or a user named by an order, a buyer's row or an audit row
--   cannot be deleted (23503), and the rows' references cannot be changed.
set local lock_timeout = '5s';

alter table orders
    drop constraint orders_flash_sale_fkey,
    drop constraint orders_user_fkey;
alter table sale_buyers
    drop constraint sale_buyers_flash_sale_fkey,
    drop constraint sale_buyers_user_fkey;
alter table purchase_attempts
    drop constraint purchase_attempts_flash_sale_fkey;

-- TG_ARGV[0] = 'sale_and_user' or 'sale': which references the inserted
-- rows carry (an audit row keeps the id of a user who may since be gone).
create function check_inserted_references() returns trigger
language plpgsql as $$
declare
    wanted bigint;
    found bigint;
begin
    select count(distinct flash_sale_id) into wanted from inserted;
    select count(*) into found from (
        select 1 from flash_sales
        where id in (select flash_sale_id from inserted)
        for key share
    ) locked;
    if found < wanted then
        raise foreign_key_violation using
            message = format('insert into %I names a flash sale that does not exist', TG_TABLE_NAME);
    end if;
    if TG_ARGV[0] = 'sale_and_user' then
        select count(distinct user_id) into wanted from inserted;
        select count(*) into found from (
            select 1 from users
            where id in (select user_id from inserted)
            for key share
        ) locked;
        if found < wanted then
            raise foreign_key_violation using
                message = format('insert into %I names a user that does not exist', TG_TABLE_NAME);
        end if;
    end if;
    return null;
end $$;

create trigger orders_references_exist
    after insert on orders referencing new table as inserted
    for each statement execute function check_inserted_references('sale_and_user');
create trigger sale_buyers_references_exist
    after insert on sale_buyers referencing new table as inserted
    for each statement execute function check_inserted_references('sale_and_user');
create trigger purchase_attempts_references_exist
    after insert on purchase_attempts referencing new table as inserted
    for each statement execute function check_inserted_references('sale');

create function refuse_reference_change() returns trigger
language plpgsql as $$
begin
    raise foreign_key_violation using
        message = format('the sale and user of a row of %I never change', TG_TABLE_NAME);
end $$;

create trigger orders_references_fixed
    before update of flash_sale_id, user_id on orders
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id
                       or old.user_id is distinct from new.user_id)
    execute function refuse_reference_change();
create trigger sale_buyers_references_fixed
    before update of flash_sale_id, user_id on sale_buyers
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id
                       or old.user_id is distinct from new.user_id)
    execute function refuse_reference_change();
create trigger purchase_attempts_references_fixed
    before update of flash_sale_id on purchase_attempts
    for each row when (old.flash_sale_id is distinct from new.flash_sale_id)
    execute function refuse_reference_change();

-- The referenced side: what `on delete no action` did. The delete has
-- locked the row when this runs, so an insert that named it either
-- committed before (and is seen here) or waits and then finds it gone.
create function refuse_delete_of_referenced_sale() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from orders where flash_sale_id = old.id)
       or exists (select 1 from sale_buyers where flash_sale_id = old.id)
       or exists (select 1 from purchase_attempts where flash_sale_id = old.id) then
        raise foreign_key_violation using
            message = format('flash sale %s has orders and cannot be deleted', old.id);
    end if;
    return old;
end $$;

create function refuse_delete_of_referenced_user() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from orders where user_id = old.id)
       -- No index leads with user_id on sale_buyers (one would cost an
       -- entry per buyer); a buyer's row comes with an order, so this scan
       -- runs only for a user without orders, and deletes are rare.
       or exists (select 1 from sale_buyers where user_id = old.id) then
        raise foreign_key_violation using
            message = format('user %s has orders and cannot be deleted', old.id);
    end if;
    return old;
end $$;

create trigger flash_sales_keep_referenced
    before delete on flash_sales
    for each row execute function refuse_delete_of_referenced_sale();
create trigger users_keep_referenced
    before delete on users
    for each row execute function refuse_delete_of_referenced_user();
