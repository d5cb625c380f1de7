# shellcheck shell=bash
# The operator scenarios of scripts/chaos (RELIABILITY.md): operators and
# Redis losses acting on a sale while the crowd buys. Sourced after
# lib/chaos/steps.sh.

# admin_patch BODY: PATCH the scenario's sale as the operator; prints the
# HTTP status.
admin_patch() {
  curl -sS -o /dev/null -w '%{http_code}\n' -X PATCH "$BASE/api/admin/flash-sales/$SALE_ID" \
    -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -d "$1"
}

# keyed_add_stock KEY UNITS: one add-stock of the scenario's sale with an
# Idempotency-Key, sent at once through nginx and to each API node directly
# (a retry racing the original on another node); prints each answer's
# status, one per line.
keyed_add_stock() {
  local urls=("$BASE") i pids=()
  for ((i = 0; i < API_NODES; i++)); do urls+=("http://127.0.0.1:$((API_BASE_PORT + i))"); done
  for i in "${!urls[@]}"; do
    curl -sS -o /dev/null -w '%{http_code}\n' -X PATCH "${urls[$i]}/api/admin/flash-sales/$SALE_ID" \
      -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
      -H "idempotency-key: $1" -d "{\"add_stock\":$2}" >"$DIR/keyed-$i.status" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  cat "$DIR"/keyed-*.status
}

# restart_workers_with VAR=VALUE...: every worker restarted with these settings.
restart_workers_with() {
  local i
  for ((i = 0; i < WORKERS; i++)); do
    stop_pid "$RUN_DIR/worker-$i.pid" flashsale-worker 30
    (export "$@"; start_worker "$i")
    wait_worker "$i"
  done
}

# last_action_mirrored ACTION PG_STATE REDIS_STATE: 1 if PostgreSQL holds
# the state ACTION leads to and Redis mirrors it, else 0.
last_action_mirrored() {
  local expected=ended
  [[ $1 == cancel ]] && expected=cancelled
  [[ $2 == "$expected" && $3 == "$expected" ]] && echo 1 || echo 0
}

# 11. While the crowd buys, an operator pauses, resumes and adds stock in a
# loop, then ends or cancels the sale; 30 clients hammer the public
# readiness probe and the reconcilers run every second. Once quiet, Redis
# mirrors the last admin action (state and version), and no order was
# committed after a cancel was answered.
scenario_admin_storm() {
  local users=${CHAOS_USERS:-5000} stock=3000 extra=1000 hammers=() actions=0 refused=0 i final final_ms
  local keys_sent=0 answers_not_200=0 answers_refused=0 statuses
  restart_workers_with FLASHSALE_RECONCILE_SCHEDULE='* * * * * *'
  scenario_begin admin-storm "$stock" "$((stock + extra))"
  for ((i = 0; i < 30; i++)); do
    (while :; do curl -s -o /dev/null "$BASE/api/health/ready"; done) &
    hammers+=($!)
  done
  start_crowd "$users" 1000
  while crowd_running && ((actions < 60)); do
    for body in '{"action":"pause"}' '{"action":"resume"}'; do
      [[ $(admin_patch "$body") == 200 ]] || refused=$((refused + 1))
      actions=$((actions + 1))
    done
    # Ten units, asked for three times at once under one key: added once,
    # and every answer a 200 (or a 503 to retry), never a refusal.
    statuses=$(keyed_add_stock "storm-$CHAOS_RUN_ID-$actions" 10)
    keys_sent=$((keys_sent + 1))
    answers_not_200=$((answers_not_200 + $(grep -cv '^200$' <<<"$statuses" || true)))
    answers_refused=$((answers_refused + $(grep -Ecv '^(200|503)$' <<<"$statuses" || true)))
    actions=$((actions + 1))
    sleep 0.2
  done
  if ((RANDOM % 2)); then final=cancel; else final=end; fi
  [[ $(admin_patch "{\"action\":\"$final\"}") == 200 ]] || die "[$SCENARIO] the final $final was refused"
  final_ms=$(now_ms)
  fault "$actions pause/resume/add-stock actions ($refused refused; each add-stock sent three times at once under one key, $answers_not_200 of those answers not 200) under the crowd, then $final; readiness hammered by 30 clients, reconcilers every second"
  wait_crowd
  kill "${hammers[@]}" 2>/dev/null || true
  wait "${hammers[@]}" 2>/dev/null || true
  RECOVERY_SECS=0
  local pg_state redis_state late_orders allotted keys_added
  # A closed sale's reservations settle; then Redis mirrors the last action.
  wait_for 60 bash -c "(( \$(redis-cli -p $REDIS_PORT zcard '$REDIS_PREFIX:{sale:$SALE_ID}:pending') == 0 ))" || true
  pg_state=$(psql_query "select state from flash_sales where id = '$SALE_ID'")
  redis_state=$(redis_cmd hget "$REDIS_PREFIX:{sale:$SALE_ID}:meta" state)
  late_orders=$(psql_query "select count(*) from orders where flash_sale_id = '$SALE_ID'
    and created_at > to_timestamp($final_ms / 1000.0)")
  allotted=$(psql_query "select allotted_quantity from flash_sales where id = '$SALE_ID'")
  # The keys whose add happened, from their audit records, whatever their
  # three answers said (a 503 may follow a commit); the allotment must have
  # grown by 10 per key, not per answer.
  keys_added=$(psql_query "select count(distinct idempotency_key) from admin_audit where target_id = '$SALE_ID'
    and action = 'sale.add_stock' and idempotency_key like 'storm-$CHAOS_RUN_ID-%'")
  scenario_end "{\"figures\": {\"admin_actions\": $actions, \"refused_actions\": $refused,
      \"final_action\": \"$final\", \"postgres_state\": \"$pg_state\", \"redis_state\": \"$redis_state\",
      \"orders_committed_after_the_final_action\": $late_orders,
      \"keyed_add_stocks_sent\": $keys_sent, \"keyed_add_stocks_made\": $keys_added,
      \"keyed_answers_not_200\": $answers_not_200, \"keyed_answers_refused\": $answers_refused, \"allotted\": $allotted},
    \"checks\": {\"redis_state_is_the_last_action\": $(json_bool "$(last_action_mirrored "$final" "$pg_state" "$redis_state")"),
                 \"no_order_after_a_cancel_was_answered\": $(json_bool "$([[ $final == end ]] || ((late_orders == 0)) && echo 1 || echo 0)"),
                 \"each_keyed_add_stock_added_once\": $(json_bool "$((keys_added > 0 && allotted == stock + 10 * keys_added))"),
                 \"no_keyed_retry_refused\": $(json_bool "$((answers_refused == 0))")}}"
  restart_workers_with FLASHSALE_RECONCILE_SCHEDULE='*/2 * * * * *'
}

# free_units: what the API says is still free of the scenario's product
# (it names the free units when asked for more than there is).
free_units() {
  curl -sS "$BASE/api/admin/flash-sales" -H "authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' -d "$(sale_request "$PRODUCT_ID" 1000000000)" \
    | jq -er '.error.message | capture("only (?<free>[0-9]+) unit").free'
}

# 12. A sale ended with a backlog of pending reservations (the workers are
# stopped meanwhile); at once a second sale of the same product takes
# everything the API says is free, and a second crowd buys from it while
# the first sale's backlog commits. No 202 of either sale fails for lack of
# stock; the first sale's unsold units become free once its backlog settled.
scenario_end_then_resell() {
  local users=${CHAOS_USERS:-5000} stock=6000 extra=500 workers=() i backlog free_at_end resell_id
  scenario_begin end-then-resell "$stock" "$((stock + extra))"
  for ((i = 0; i < WORKERS; i++)); do workers+=("$(pid_of "$RUN_DIR/worker-$i.pid")"); done
  kill -STOP "${workers[@]}"
  start_crowd "$users" 1000
  # Ended about a third of the way into the crowd, before it sells out.
  sleep 1.5
  [[ $(admin_patch '{"action":"end"}') == 200 ]] || die "[$SCENARIO] end refused"
  backlog=$(pending_reservations)
  free_at_end=$(free_units)
  resell_id=$(create_sale "$BASE" "$ADMIN_TOKEN" "$free_at_end" "$CHAOS_RUN_ID-resell" "$PER_USER_LIMIT" "$PRODUCT_ID")
  mkdir -p "$DIR/resell"
  fault "sale ended with $backlog reservations pending (workers stopped); a second sale of the product created at once with the $free_at_end units the API called free; workers resumed"
  "$CROWD_BIN" --host "$BASE" --sale-id "$resell_id" --run-id "$CHAOS_RUN_ID-resell" \
    --users 1000 --rate 1000 --concurrency 100 --out "$DIR/resell" --max-quantity "$MAX_QUANTITY" \
    >"$DIR/resell/crowd.out" 2>"$DIR/resell.log" &
  local resell_crowd=$! resumed
  kill -CONT "${workers[@]}"
  resumed=$(now_ms)
  wait_crowd
  wait "$resell_crowd" || die "[$SCENARIO] the resell crowd failed; see $DIR/resell.log"
  wait_for 60 bash -c "(( \$(redis-cli -p $REDIS_PORT zcard '$REDIS_PREFIX:{sale:$SALE_ID}:pending') == 0 ))" || true
  RECOVERY_SECS=$(elapsed_since "$resumed")
  local free_after unsold resell_refused resell_units product_ok
  wait_for 30 bash -c "[[ \$('$(pg_bin)/psql' '$DATABASE_URL_LOCAL' -XAtq -c \"select allotment_released_at is not null from flash_sales where id = '$SALE_ID'\") == t ]]" || true
  free_after=$(free_units)
  unsold=$(psql_query "select allotted_quantity - confirmed_quantity from flash_sales where id = '$SALE_ID'")
  resell_refused=$(psql_query "select count(*) from purchase_attempts where flash_sale_id = '$resell_id' and reason = 'no_stock'")
  resell_units=$(psql_query "select coalesce(sum(quantity), 0) from orders where flash_sale_id = '$resell_id'")
  product_ok=$(psql_query "select s.total_quantity - s.available_quantity = (select coalesce(sum(o.quantity), 0)
      from orders o join flash_sales f on f.id = o.flash_sale_id where f.product_id = s.product_id)
    from stocks s where s.product_id = '$PRODUCT_ID'")
  scenario_end "{\"figures\": {\"backlog_at_end\": $backlog, \"free_at_end\": $free_at_end,
      \"free_after_the_backlog_settled\": $free_after, \"first_sale_unsold\": $unsold,
      \"resell_sale\": \"$resell_id\", \"resell_units_sold\": $resell_units,
      \"resell_promised_stock_refused\": $resell_refused},
    \"checks\": {\"a_backlog_was_pending_at_end\": $(json_bool "backlog > 0"),
                 \"only_the_extra_units_free_while_the_backlog_waits\": $(json_bool "free_at_end == $extra"),
                 \"unsold_units_free_once_settled\": $(json_bool "free_after == unsold + $extra - free_at_end"),
                 \"resell_promised_stock_never_refused\": $(json_bool "resell_refused == 0"),
                 \"product_ledger_holds\": $([[ $product_ok == t ]] && echo true || echo false)}}"
}

# 13. Redis wiped (FLUSHALL) mid-drain; once the sale is armed again every
# shopper retries every key it was answered 202 for: a key whose purchase
# became an order gets that reservation back, and nobody goes above the
# limit. Reservations still pending at the wipe died with Redis (their
# retries are new purchases).
scenario_wipe_and_retry() {
  local users=${CHAOS_USERS:-5000} wiped
  scenario_begin wipe-and-retry "$users"
  start_crowd "$users" 1000 --retry-when "$DIR/retry-now" --give-up-secs 90
  wait_for 120 grep -q "waiting for" "$DIR/crowd.log" || die "[$SCENARIO] the crowd did not finish buying"
  redis_cmd flushall >/dev/null
  wiped=$(now_ms)
  fault "FLUSHALL of Redis while the accepted purchases drained; every key retried once the sale was armed again"
  # Batches in flight at the wipe commit within a moment; then the sale is
  # armed from PostgreSQL (a readiness probe starts it) and the keys retried.
  sleep 3
  curl -fsS -o /dev/null "$BASE/api/health/ready" || true
  wait_for 30 bash -c "[[ -n \$(redis-cli -p $REDIS_PORT hget '$REDIS_PREFIX:{sale:$SALE_ID}:meta' stock) ]]" \
    || die "[$SCENARIO] the sale was not armed again"
  touch "$DIR/retry-now"
  wait_crowd
  RECOVERY_SECS=$(elapsed_since "$wiped")
  local retried replayed
  retried=$(jq -s 'map(select(.retry_status != null)) | length' "$DIR/shoppers.jsonl")
  replayed=$(jq -s 'map(select(.retry_reservation_id != null and .retry_reservation_id == .reservation_id)) | length' "$DIR/shoppers.jsonl")
  scenario_end "{\"died_with_redis_max\": 1000000000, \"untold_orders_max\": 0,
    \"figures\": {\"keys_retried\": $retried, \"retries_replayed\": $replayed},
    \"checks\": {\"every_accepted_key_retried\": $(json_bool "retried > 0"),
                 \"some_retries_replayed\": $(json_bool "replayed > 0")}}"
}

# 14. Retention: workers archive closed sales 3 s after they settled. The
# sale ends after the crowd; its keys leave Redis, its stats, and the
# shoppers' purchase statuses, still answer (from PostgreSQL), and Redis's
# memory returns to where it was before the sale.
scenario_retention() {
  local users=${CHAOS_USERS:-5000} stock=3000 memory_before memory_peak memory_after stats_before stats_after
  restart_workers_with FLASHSALE_RETENTION_SECS=3 FLASHSALE_RECONCILE_SCHEDULE='* * * * * *'
  # Earlier scenarios' sales are archived too (they ended): wait for that
  # before measuring the baseline.
  wait_for 60 bash -c "[[ \$('$(pg_bin)/psql' '$DATABASE_URL_LOCAL' -XAtq -c \"select count(*) from flash_sales where state in ('ended', 'cancelled') and archived_at is null\") == 0 ]]" || true
  memory_before=$(redis_cmd info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  scenario_begin retention "$stock"
  start_crowd "$users" 1000
  wait_crowd
  memory_peak=$(redis_cmd info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  wait_for 60 redis_agrees || true
  stats_before=$(curl -fsS "$BASE/api/admin/flash-sales/$SALE_ID/stats" -H "authorization: Bearer $ADMIN_TOKEN")
  [[ $(admin_patch '{"action":"end"}') == 200 ]] || die "[$SCENARIO] end refused"
  local ended archived_after keys_left
  ended=$(now_ms)
  fault "sale ended after the crowd; retention 3 s"
  wait_for 60 bash -c "[[ \$('$(pg_bin)/psql' '$DATABASE_URL_LOCAL' -XAtq -c \"select archived_at is not null from flash_sales where id = '$SALE_ID'\") == t ]]" \
    || die "[$SCENARIO] the sale was not archived within 60 s"
  archived_after=$(elapsed_since "$ended")
  RECOVERY_SECS=$archived_after
  keys_left=$(redis_cmd --scan --pattern "$REDIS_PREFIX:{sale:$SALE_ID}:*" | wc -l)
  sleep 1 # UNLINK frees in the background
  memory_after=$(redis_cmd info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  stats_after=$(curl -fsS "$BASE/api/admin/flash-sales/$SALE_ID/stats" -H "authorization: Bearer $ADMIN_TOKEN")
  # Twenty shoppers ask for their purchase by reservation id alone.
  local checked=0 matching=0 story email token answer
  while IFS= read -r story; do
    email="crowd-${CHAOS_RUN_ID,,}-retention-$(jq -r .user <<<"$story")@load.local"
    token=$(mint_token --email "$email" --ttl 10m)
    answer=$(curl -sS "$BASE/api/purchase/status?reservation_id=$(jq -r .reservation_id <<<"$story")" \
      -H "authorization: Bearer $token" | jq -r .status)
    checked=$((checked + 1))
    [[ $answer == "$(jq -r .outcome <<<"$story")" ]] && matching=$((matching + 1))
  done < <(jq -c 'select(.status == 202 and (.outcome == "confirmed" or .outcome == "failed"))' "$DIR/shoppers.jsonl" | head -n 20)
  local same_stats
  same_stats=$(jq -n --argjson a "$stats_before" --argjson b "$stats_after" \
    '[ "attempts", "accepted", "replayed", "rejected", "confirmed_units", "released", "failed" ]
     | all(. as $f | $a[$f] == $b[$f])')
  scenario_end "{\"figures\": {\"archived_after_end_secs\": $archived_after, \"keys_left\": $keys_left,
      \"redis_used_memory_before\": $memory_before, \"redis_used_memory_peak\": $memory_peak,
      \"redis_used_memory_after\": $memory_after, \"statuses_checked\": $checked, \"statuses_matching\": $matching},
    \"checks\": {\"keys_left_redis\": $(json_bool "keys_left == 0"),
                 \"stats_answer_the_same_from_postgres\": $same_stats,
                 \"statuses_answer_from_postgres\": $(json_bool "checked > 0 && matching == checked"),
                 \"redis_memory_back_to_baseline\": $(json_bool "memory_after <= memory_before + 1048576")}}"
  restart_workers_with FLASHSALE_RECONCILE_SCHEDULE='*/2 * * * * *'
}
