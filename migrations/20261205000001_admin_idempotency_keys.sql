-- An operator's change sent again (a timeout, a proxy's retry, a double
-- click) must happen once: "add 100 units" retried would otherwise allot
-- 200, and a retried sale creation would allot the product twice. A
-- change may carry an Idempotency-Key; its audit record keeps the key and
-- the request it named, so a retry finds it and answers without changing
-- anything again. Keys are per admin, as purchase keys are per shopper.
alter table admin_audit
    add column idempotency_key text,
    -- The request the key named (action, target, what was asked): a retry
    -- must match it, or it is another request under a used key.
    add column idempotency_request jsonb;

create unique index admin_audit_idempotency_key
    on admin_audit (actor_id, idempotency_key) where idempotency_key is not null;
