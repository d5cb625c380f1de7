-- The schema holds the same bounds as the domain types the rows are read
-- into (domain::Quantity: 1 to 1000 units; domain::Money: 0 to 10^12 minor
-- units), so a row written outside the API cannot make a read of it fail.
-- NOT VALID: every new or changed row is checked, without scanning the
-- rows already there (the API wrote them within the bounds; they are not
-- validated). Adding a constraint still takes each table's exclusive lock
-- for the migration's transaction: a migration run mid-sale gives up after
-- the lock timeout instead of stalling settlement; run it again.
set local lock_timeout = '5s';
alter table orders
    add constraint orders_quantity_within_bound check (quantity <= 1000) not valid,
    add constraint orders_unit_price_within_bound check (unit_price <= 1000000000000) not valid;
alter table purchase_attempts
    add constraint purchase_attempts_quantity_within_bound check (quantity <= 1000) not valid;
alter table products
    add constraint products_price_within_bound check (price <= 1000000000000) not valid;
alter table flash_sales
    add constraint flash_sales_price_within_bound check (sale_price <= 1000000000000) not valid;
