-- A sale's version: 1 when created, one more on every change an admin
-- makes (state, added stock). Arming writes it into Redis with the state
-- it mirrors and never lets an older version overwrite a newer one, so a
-- reader that saw the sale before a cancel (the reconciler, a readiness
-- probe, a purchase re-arming a missing sale) cannot undo the cancel.
alter table flash_sales add column version bigint not null default 1;
