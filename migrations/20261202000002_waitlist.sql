-- Waitlists (issue 20): once a sale with checkout holds is sold out, a
-- shopper may wait for a unit. A hold that ends unpaid gives its units to
-- the head of the waitlist first, each as an offer that is itself a hold
-- (`awaiting_payment`, `pay_by` = now + the sale's offer time); only
-- units nobody waits for go back on sale.
set local lock_timeout = '5s';

alter table flash_sales
    -- Seconds a waitlist offer gives its shopper to pay; null: the hold's.
    add column offer_seconds integer,
    add constraint flash_sales_offer_seconds_bound
        check (offer_seconds is null or (hold_seconds is not null and offer_seconds between 1 and 3600));

alter table orders
    -- An offer's order: the ended hold whose unit it was given. Also tells
    -- the sweep which grants Redis still owes with that hold's return.
    add column offered_from uuid references orders (id);

create index orders_offered_from_idx on orders (offered_from) where offered_from is not null;

-- One entry per shopper and sale; join order is `id` order. An entry
-- leaves when its shopper leaves, is offered a unit, or can no longer be
-- (banned, at the limit, holding a unit bought since).
create table waitlist_entries (
    id             bigint generated always as identity primary key,
    flash_sale_id  uuid not null references flash_sales (id),
    user_id        uuid not null references users (id),
    joined_at      timestamptz not null default now(),
    constraint waitlist_entries_one_per_shopper unique (flash_sale_id, user_id)
);

create index waitlist_entries_queue_idx on waitlist_entries (flash_sale_id, id);
