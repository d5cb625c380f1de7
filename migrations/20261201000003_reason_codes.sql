-- Failure reasons are stored as stable codes (FailureReason::code), never
-- as the sentence shown to shoppers: settlement reads them back to decide
-- whether a failed reservation's units exist, and rewording a sentence
-- must not change that. Rows written before this migration hold sentences.
update purchase_attempts set reason = case reason
    when 'the sale was cancelled before the order was committed' then 'sale_cancelled'
    when 'the account no longer exists' then 'user_gone'
    when 'the account was suspended by the shop before the order was committed' then 'banned'
    when 'the per-user limit of this sale was already reached' then 'limit_reached'
    when 'no unit was left in stock for this reservation' then 'no_stock'
    else reason
end
where reason is not null;
