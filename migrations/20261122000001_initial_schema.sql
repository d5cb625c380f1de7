-- The flashsale schema: users, products and their stock, flash sales,
-- orders, and the audit trail of reservations. PostgreSQL is the source of
-- truth; Redis state is rebuilt from these tables (DESIGN.md §7).
-- Every constraint is named: the application maps violations by name.

create table users (
    id          uuid primary key,
    email       text not null,
    role        text not null default 'shopper',
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint users_email_key unique (email),
    constraint users_email_normalized check (email = lower(btrim(email)) and email like '%_@_%'),
    constraint users_role_valid check (role in ('shopper', 'admin'))
);

create table products (
    id          uuid primary key,
    sku         text not null,
    name        text not null,
    description text not null default '',
    price       bigint not null,
    currency    text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint products_sku_key unique (sku),
    constraint products_price_nonnegative check (price >= 0),
    constraint products_currency_iso4217 check (currency ~ '^[A-Z]{3}$')
);

-- One row per product. available_quantity drops as orders commit.
create table stocks (
    product_id          uuid primary key
                        constraint stocks_product_fkey references products (id) on delete cascade,
    total_quantity      bigint not null,
    available_quantity  bigint not null,
    version             bigint not null default 0,
    updated_at          timestamptz not null default now(),
    constraint stocks_available_nonnegative check (available_quantity >= 0),
    constraint stocks_available_within_total check (available_quantity <= total_quantity)
);

create table flash_sales (
    id                  uuid primary key,
    product_id          uuid not null constraint flash_sales_product_fkey references products (id),
    sale_price          bigint not null,
    starts_at           timestamptz not null,
    ends_at             timestamptz not null,
    state               text not null,
    per_user_limit      integer not null default 1,
    -- Units promised to this sale; only ever grows (PATCH add_stock).
    allotted_quantity   bigint not null,
    -- Units committed as orders, maintained by the worker in the same
    -- transaction as the orders: the no-oversell check below is invariant I1
    -- enforced by the database itself.
    confirmed_quantity  bigint not null default 0,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint flash_sales_window_valid check (starts_at < ends_at),
    constraint flash_sales_state_valid
        check (state in ('scheduled', 'active', 'paused', 'ended', 'cancelled')),
    constraint flash_sales_price_nonnegative check (sale_price >= 0),
    constraint flash_sales_per_user_limit_positive check (per_user_limit >= 1),
    constraint flash_sales_allotted_positive check (allotted_quantity >= 1),
    constraint flash_sales_confirmed_nonnegative check (confirmed_quantity >= 0),
    constraint flash_sales_no_oversell check (confirmed_quantity <= allotted_quantity)
);

-- Open sales by start time: "the current sale" and arming.
create index flash_sales_open_by_start_idx on flash_sales (starts_at)
    where state in ('scheduled', 'active', 'paused');
create index flash_sales_product_idx on flash_sales (product_id);

create table orders (
    id               uuid primary key,
    reservation_id   uuid not null,
    flash_sale_id    uuid not null constraint orders_flash_sale_fkey references flash_sales (id),
    user_id          uuid not null constraint orders_user_fkey references users (id),
    quantity         integer not null,
    unit_price       bigint not null,
    status           text not null default 'confirmed',
    idempotency_key  text not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    -- A reservation becomes at most one order, however often its job runs.
    constraint orders_reservation_id_key unique (reservation_id),
    constraint orders_quantity_positive check (quantity >= 1),
    constraint orders_unit_price_nonnegative check (unit_price >= 0),
    constraint orders_status_valid check (status in ('confirmed', 'cancelled'))
);

create index orders_user_created_idx on orders (user_id, created_at desc);
create index orders_flash_sale_idx on orders (flash_sale_id);

-- Units each shopper bought in each sale, with the sale's limit copied in so
-- that a check constraint can enforce it: the per-user limit (invariant I3)
-- holds in PostgreSQL, not only in Redis. The worker upserts this row in the
-- same transaction as the orders.
create table sale_buyers (
    flash_sale_id   uuid not null constraint sale_buyers_flash_sale_fkey references flash_sales (id),
    user_id         uuid not null constraint sale_buyers_user_fkey references users (id),
    units           integer not null,
    per_user_limit  integer not null,
    updated_at      timestamptz not null default now(),
    constraint sale_buyers_pkey primary key (flash_sale_id, user_id),
    constraint sale_buyers_units_positive check (units >= 1),
    constraint sale_buyers_within_limit check (units <= per_user_limit)
);

-- The audit trail: one row per accepted reservation, written by the worker
-- when the reservation ends. Rejected attempts are counted in Redis instead.
create table purchase_attempts (
    reservation_id  uuid primary key,
    flash_sale_id   uuid not null constraint purchase_attempts_flash_sale_fkey references flash_sales (id),
    user_id         uuid not null,
    quantity        integer not null,
    outcome         text not null,
    reason          text,
    reserved_at     timestamptz not null,
    ended_at        timestamptz not null default now(),
    constraint purchase_attempts_quantity_positive check (quantity >= 1),
    constraint purchase_attempts_outcome_valid
        check (outcome in ('confirmed', 'released', 'expired', 'failed')),
    constraint purchase_attempts_reason_when_not_confirmed
        check (outcome = 'confirmed' or reason is not null)
);

create index purchase_attempts_sale_outcome_idx on purchase_attempts (flash_sale_id, outcome);
