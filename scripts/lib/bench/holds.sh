# shellcheck shell=bash
# scripts/bench --pay-ratio: pay a share of the held orders through the
# webhook, as a provider would, and watch the rest expire. Sourced after
# lib/bench/steps.sh.

# awaiting_or_owed SALE: holds of the sale still awaiting payment, or
# expired with their units not yet back in Redis.
awaiting_or_owed() {
  psql_query "select count(*) from orders where flash_sale_id = '$1'
              and (status = 'awaiting_payment' or (status = 'expired' and units_returned_at is null))"
}
nothing_awaiting_or_owed() { [[ $(awaiting_or_owed "$1") == 0 ]]; }

# pay_holds SALE ACCEPTED DIR: signs and sends (wrk, through nginx) one
# payment for the first PAY_RATIO of the sale's orders, waits until the
# others expired and were returned to Redis, and writes DIR/holds.json.
pay_holds() {
  local sale=$1 accepted=$2 dir=$3 deliveries
  deliveries=$(awk -v n="$accepted" -v r="$PAY_RATIO" 'BEGIN { printf "%d", n * r + 0.5 }')
  ((deliveries >= 1)) || die "--pay-ratio $PAY_RATIO of $accepted accepted purchases pays none; raise it"
  log "signing and sending $deliveries payments (ratio $PAY_RATIO of $accepted held orders) through nginx"
  psql_query "select o.id, o.unit_price * o.quantity, p.currency from orders o
              join flash_sales s on s.id = o.flash_sale_id join products p on p.id = s.product_id
              where o.flash_sale_id = '$sale' order by o.id limit $deliveries" \
    | tr '|' ' ' | python3 "$BENCH_DIR/sign_payments.py" "${FLASHSALE_WEBHOOK_SECRETS%%,*}" >"$dir/deliveries.tsv"
  run_wrk "$dir/pay.json" "$CONCURRENCY" pay "$dir/deliveries.tsv"
  log "waiting for the unpaid holds to expire ($HOLD s after their reservations, then the 2 s grace)"
  wait_for $((HOLD + 60)) nothing_awaiting_or_owed "$sale" \
    || log "holds still awaiting payment or owed to Redis after $((HOLD + 60)) s"
  psql_file "$BENCH_DIR/holds.sql" sale_id="$sale" >"$dir/holds_pg.json"
  jq -n --slurpfile pay "$dir/pay.json" --slurpfile pg "$dir/holds_pg.json" \
    --argjson deliveries "$deliveries" --argjson accepted "$accepted" \
    --argjson ratio "$PAY_RATIO" --argjson hold "$HOLD" \
    '($pay[0]) as $w | ($pg[0]) as $h | ($w.duration_us / 1e6) as $seconds
     | (if $h.first_expired_at == null then null
        else $h.last_expired_at - $h.first_expired_at end) as $wave
     | { pay_ratio: $ratio, hold_s: $hold, deliveries: $deliveries,
         webhook: { per_s: (if $seconds > 0 then ($w.responses / $seconds | round) else null end),
                    latency_ms: ($w.latency_us | map_values(. / 1000 * 100 | round / 100)),
                    statuses: $w.statuses, socket_errors: $w.socket_errors },
         paid: $h.paid, expired: $h.expired, awaiting: $h.awaiting,
         expiry_wave_s: (if $wave == null then null else ($wave * 1000 | round / 1000) end),
         expired_per_s: (if $wave != null and $wave > 0 then ($h.expired / $wave | round) else null end),
         expiry_lag_ms: $h.expiry_lag_ms, units_owed_to_redis: $h.units_owed_to_redis,
         invariants_passed: $h.invariants_passed }
     | .passed = ((.webhook.statuses["200"] // 0) == $deliveries and .paid == $deliveries
                  and .expired == $accepted - $deliveries and .awaiting == 0
                  and .units_owed_to_redis == 0 and .invariants_passed)' >"$dir/holds.json"
}
