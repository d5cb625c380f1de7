-- Issue 19: every settled purchase wrote an entry into an index no query
-- reads. purchase_attempts_sale_outcome_idx (flash_sale_id, outcome) no
-- longer serves anything: the stats count outcomes in Redis, and the
-- queries that name a sale (a shopper's latest settled purchase, the
-- invariants check, scripts/bench's outcome count and its wait for the
-- workers) use purchase_attempts_sale_user_idx, which leads with
-- flash_sale_id too.
drop index purchase_attempts_sale_outcome_idx;
