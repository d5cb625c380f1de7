# shellcheck shell=bash
# The checkout-hold scenarios of scripts/chaos: the storm (issue 20),
# thousands of holds ending at once, by payment and by expiry, with a worker
# killed mid-sweep; and an operator's cancel of a sale with a stampede's
# worth of holds awaiting payment.
# Sourced after lib/chaos/steps.sh.

HOLD_STORM=$CHAOS_LIB/hold_storm.py

# sale_orders [WHERE...]: orders of the sale (matching the condition).
sale_orders() {
  psql_query "select count(*) from orders where flash_sale_id = '$SALE_ID' ${1:+and ($1)}"
}
all_held_orders_written() { [[ $(sale_orders) == "$1" ]]; }
# nothing_due: no hold past its deadline and the grace, and no ended hold
# whose units Redis has not got back.
nothing_due() {
  [[ $(sale_orders "(status = 'awaiting_payment' and pay_by < now() - interval '2 seconds')
                    or (status in ('expired', 'cancelled') and units_returned_at is null)") == 0 ]]
}

nothing_pending() { (($(pending_reservations) == 0)); }
holds_cancelled_by_the_sweep() { (($(sale_orders "status = 'cancelled'") > 0)); }
# nothing_awaiting_or_owed: no hold of the sale awaits payment, and no ended
# one's units are still owed to Redis.
nothing_awaiting_or_owed() {
  [[ $(sale_orders "status = 'awaiting_payment'
                    or (status in ('expired', 'cancelled') and units_returned_at is null)") == 0 ]]
}

# held_units: units of the sale awaiting payment or paid, in PostgreSQL.
held_units() {
  psql_query "select coalesce(sum(quantity), 0) from orders
              where flash_sale_id = '$SALE_ID' and status in ('awaiting_payment', 'paid')"
}

# long_lock_holders: the sessions holding an advisory lock (a product's or a
# sale's: the sweeps and settlement wait on them) in a transaction older
# than a second, each with its process (every flashsale session is named
# "<binary>@<host>[<pid>]"). A run once saw a product's lock held ~30 s after a
# worker was killed; a test has since shown how a batch past the bound,
# finished by PostgreSQL for nobody, keeps every next sweep waiting
# (workers/tests/holds.rs, with expiries slowed by a trigger).
long_lock_holders() {
  psql_query "select now()::time(3), a.pid, a.application_name, a.state,
                     coalesce(a.wait_event_type || ':' || a.wait_event, '-'),
                     round(extract(epoch from now() - a.xact_start)::numeric, 2),
                     left(regexp_replace(a.query, '\s+', ' ', 'g'), 100)
              from pg_locks l join pg_stat_activity a on a.pid = l.pid
              where l.locktype = 'advisory' and l.granted and now() - a.xact_start > interval '1 second'" |
    while IFS='|' read -r when pid process state waiting age query; do
      echo "$when backend=$pid $process $state $waiting for ${age}s $query"
    done
}

# waitlist_offers: offers the sale's waitlist was given.
waitlist_offers() { sale_orders "offered_from is not null"; }
every_waiter_offered() { (($(waitlist_offers) >= $1)); }

# open_hold_sale UNITS HOLD_SECS: a product and a sale of UNITS units, one
# per shopper, held HOLD_SECS for payment; sets SALE_ID, DIR and FAULTS.
open_hold_sale() {
  local product
  DIR=$CHAOS_RUN_DIR/$SCENARIO
  mkdir -p "$DIR"
  ADMIN_TOKEN=$(admin_token)
  product=$(create_product "$BASE" "$ADMIN_TOKEN" "$1" "BENCH-$CHAOS_RUN_ID-$SCENARIO")
  SALE_ID=$(create_sale "$BASE" "$ADMIN_TOKEN" "$1" "$CHAOS_RUN_ID-$SCENARIO" 1 "$product" 500 "$2")
  FAULTS=()
  log "[$SCENARIO] sale $SALE_ID: $1 units, one per shopper, held $2 s for payment"
}

# payments_of_every_other_order MODE_SQL: one line per even order of the
# sale (id, amount, currency, MODE_SQL: how hold_storm.py pays it, given
# the order's row number n).
payments_of_every_other_order() {
  psql_query "select o.id, o.unit_price * o.quantity, p.currency, $1
              from (select *, row_number() over (order by id) as n from orders
                    where flash_sale_id = '$SALE_ID') o
              join flash_sales s on s.id = o.flash_sale_id join products p on p.id = s.product_id
              where n % 2 = 0" | tr '|' ' '
}

# report_hold_scenario ORDERS DUPLICATES: the summary row of $DIR/result.json
# (ORDERS and DUPLICATES are jq expressions over it), its verdict, and the
# sale ended.
report_hold_scenario() {
  jq -r "[.scenario, (.buy.answers | add | tostring), (.buy.answers[\"202\"] | tostring),
          (($1) | tostring), (.invariants.oversold | tostring), (($2) | tostring), \"0\", \"-\",
          (.recovery_secs | tostring), (if .passed then \"passed\" else \"FAILED\" end)] | join(\"\t\")" \
    "$DIR/result.json" >>"$CHAOS_RUN_DIR/table.txt"
  if jq -e .passed "$DIR/result.json" >/dev/null; then log "[$SCENARIO] passed"; else
    log "[$SCENARIO] FAILED: $(jq -c '.checks | with_entries(select(.value == false)) | keys' "$DIR/result.json")"
    FAILED_SCENARIOS+=("$SCENARIO")
  fi
  curl -fsS -X PATCH "$BASE/api/admin/flash-sales/$SALE_ID" -H "authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"action":"end"}' >/dev/null 2>&1 || true
}

# hold-storm: CHAOS_HOLD_USERS (10,000) shoppers each hold the one unit
# they bought (hold CHAOS_HOLD_SECS, 30 s), and CHAOS_WAITERS (1,000) more
# join the sold-out sale's waitlist. Half the holders pay before the
# deadline: every fifth of those the same event three times at once, every
# seventh after a delivery signed with a wrong secret. The other half never
# pay and expire together; as they do, worker-0 is killed -9 mid-sweep and
# started again, and CHAOS_LATE_BUYERS (2,000) new shoppers try to buy the
# units coming back. The returned units go to the waiters first, in join
# order, each as an offer they then pay. Sampled every 200 ms: paid +
# awaiting <= allotted.
scenario_hold_storm() {
  local holders=${CHAOS_HOLD_USERS:-10000} late=${CHAOS_LATE_BUYERS:-2000} hold=${CHAOS_HOLD_SECS:-30}
  local waiters=${CHAOS_WAITERS:-1000}
  local started first_deadline sampler lock_sampler buy paid late_buyers figures killed_at joined offers_paid
  SCENARIO=hold-storm
  open_hold_sale "$holders" "$hold"

  python3 "$HOLD_STORM" login "$BASE" "holder-$CHAOS_RUN_ID" "$holders" 32 >"$DIR/holders.tokens"
  python3 "$HOLD_STORM" login "$BASE" "late-$CHAOS_RUN_ID" "$late" 16 >"$DIR/late.tokens"
  python3 "$HOLD_STORM" login "$BASE" "waiter-$CHAOS_RUN_ID" "$waiters" 16 >"$DIR/waiters.tokens"
  started=$(now_ms)
  buy=$(python3 "$HOLD_STORM" buy "$BASE" "$DIR/holders.tokens" "$SALE_ID" 64)
  log "[hold-storm] bought in $(elapsed_since "$started") s: $buy"
  wait_for 120 all_held_orders_written "$holders" \
    || die "[hold-storm] the worker did not write $holders orders"
  joined=$(python3 "$HOLD_STORM" join "$BASE" "$DIR/waiters.tokens" "$SALE_ID" 16)
  log "[hold-storm] waitlist: $joined"

  : >"$DIR/held.samples"
  (while :; do held_units >>"$DIR/held.samples"; sleep 0.2; done) &
  sampler=$!

  # Even rows pay (every tenth three times at once, every fourteenth after
  # a forged delivery); odd rows never pay.
  payments_of_every_other_order "case when n % 10 = 0 then 'dup' when n % 14 = 0 then 'forged' else 'pay' end" \
    >"$DIR/payments.txt"
  paid=$(python3 "$HOLD_STORM" pay "$BASE" "$FLASHSALE_WEBHOOK_SECRETS" "$DIR/payments.txt" 32)
  log "[hold-storm] payments: $paid"

  # The unpaid half expires 2 s after its deadlines; kill a worker as the
  # sweep starts on them, while the late buyers arrive.
  first_deadline=$(psql_query "select (extract(epoch from min(pay_by)) * 1000)::bigint + 2300
                               from orders where flash_sale_id = '$SALE_ID' and status = 'awaiting_payment'")
  while (($(now_ms) < first_deadline)); do sleep 0.1; done
  (while :; do long_lock_holders >>"$DIR/long_lock_holders.txt"; sleep 0.5; done) &
  lock_sampler=$!
  python3 "$HOLD_STORM" buyers "$BASE" "$DIR/late.tokens" "$SALE_ID" 20 32 >"$DIR/late.json" &
  late_buyers=$!
  sleep 0.5
  kill -9 "$(pid_of "$RUN_DIR/worker-0.pid")" 2>/dev/null || true
  killed_at=$(now_ms)
  fault "kill -9 of worker-0 mid-sweep, $((killed_at - first_deadline + 2300)) ms after the first deadline, restarted at once"
  restart_worker 0 "$FAILPOINT_WORKER"
  wait "$late_buyers" || die "[hold-storm] the late buyers failed"
  wait_for 60 every_waiter_offered "$waiters" || log "[hold-storm] not every waiter was offered a unit after 60 s"
  psql_query "select o.id, o.unit_price * o.quantity, p.currency, 'pay'
              from orders o join flash_sales s on s.id = o.flash_sale_id join products p on p.id = s.product_id
              where o.flash_sale_id = '$SALE_ID' and o.offered_from is not null" | tr '|' ' ' >"$DIR/offers.txt"
  offers_paid=$(python3 "$HOLD_STORM" pay "$BASE" "$FLASHSALE_WEBHOOK_SECRETS" "$DIR/offers.txt" 16)
  log "[hold-storm] offers paid: $offers_paid"
  wait_for 60 nothing_due || log "[hold-storm] holds still due or owed after 60 s"
  # The late buyers' purchases settle too (a worker was just killed).
  wait_for 60 nothing_pending || log "[hold-storm] reservations still pending after 60 s"
  RECOVERY_SECS=$(elapsed_since "$killed_at")
  local agreed=false
  if wait_for 30 redis_agrees; then agreed=true; fi
  kill "$sampler" "$lock_sampler" 2>/dev/null || true
  wait "$sampler" "$lock_sampler" 2>/dev/null || true
  if [[ -s $DIR/long_lock_holders.txt ]]; then
    log "[hold-storm] advisory locks held over 1 s (first and last seen, all in $DIR/long_lock_holders.txt):"
    sed -n '1p;$p' "$DIR/long_lock_holders.txt" >&2
  fi

  figures=$(psql_query "select json_build_object(
      'holders_paid', count(*) filter (where o.status = 'paid' and o.idempotency_key like 'hold-storm-%'),
      'holders_expired', count(*) filter (where o.status = 'expired' and o.idempotency_key like 'hold-storm-%'),
      'holders_awaiting', count(*) filter (where o.status = 'awaiting_payment' and o.idempotency_key like 'hold-storm-%'),
      'late_buyers_orders', count(*) filter (where o.idempotency_key like 'late-buyer-%'),
      'waiters_offered', count(*) filter (where o.offered_from is not null),
      'offers_paid', count(*) filter (where o.offered_from is not null and o.status = 'paid'),
      'shoppers_offered_twice', (select count(*) from (select user_id from orders
                                 where flash_sale_id = '$SALE_ID' and offered_from is not null
                                 group by user_id having count(*) > 1) twice),
      -- Offers in the order they were made (UUIDv7 ids) against join order
      -- (the waitlist entry's id, kept in the offer's key).
      'offers_out_of_join_order', (select count(*) from (
          select row_number() over (order by id) as made,
                 row_number() over (order by split_part(idempotency_key, '#', 2)::bigint) as joined
          from orders where flash_sale_id = '$SALE_ID' and offered_from is not null) x
          where made <> joined),
      'still_waiting', (select count(*) from waitlist_entries where flash_sale_id = '$SALE_ID'),
      -- From the first hold expired to the last expired, and to the last
      -- offer made: how long the wave took.
      'expiry_wave_ms', round(extract(epoch from max(o.ended_at) filter (where o.status = 'expired' and o.idempotency_key like 'hold-storm-%')
                                      - min(o.ended_at) filter (where o.status = 'expired')) * 1000),
      'offers_made_ms', round(extract(epoch from max(o.created_at) filter (where o.offered_from is not null)
                                      - min(o.ended_at) filter (where o.status = 'expired')) * 1000),
      'units_owed_to_redis', count(*) filter (where o.status in ('expired', 'cancelled') and o.units_returned_at is null),
      'orders_paid_twice', (select count(*) from (select order_id from payment_events
                            where outcome = 'paid' and order_id in (select id from orders where flash_sale_id = '$SALE_ID')
                            group by order_id having count(*) > 1) twice))
    from orders o where o.flash_sale_id = '$SALE_ID'")
  psql_query "select flash_sale_invariants('$SALE_ID')" >"$DIR/postgres.json"
  jq -n --arg sale_id "$SALE_ID" --argjson buy "$buy" --argjson pay "$paid" \
    --argjson joined "$joined" --argjson offers_pay "$offers_paid" --argjson waiters "$waiters" \
    --slurpfile late "$DIR/late.json" --argjson figures "$figures" --slurpfile db "$DIR/postgres.json" \
    --argjson max_held "$(sort -n "$DIR/held.samples" | tail -1)" --argjson samples "$(wc -l <"$DIR/held.samples")" \
    --argjson holders "$holders" --argjson recovery_secs "$RECOVERY_SECS" --argjson redis_agrees "$agreed" \
    --argjson faults "$(printf '%s\n' "${FAULTS[@]}" | jq -R . | jq -s .)" \
    --argjson forged "$(grep -c ' forged$' "$DIR/payments.txt")" --argjson dups "$(grep -c ' dup$' "$DIR/payments.txt")" \
    '($pay.outcomes) as $o | ($late[0]) as $l | ($db[0]) as $d |
    { scenario: "hold-storm", sale_id: $sale_id, faults: $faults, recovery_secs: $recovery_secs,
      holders: $holders, buy: $buy, payments: $pay, late_buyers: $l, figures: $figures,
      waiters: $waiters, waitlist_joins: $joined, offer_payments: $offers_pay,
      held_samples: $samples, max_held_units: $max_held, invariants: $d,
      checks: {
        every_holder_held: ($buy.answers["202"] == $holders),
        paid_plus_awaiting_within_allotment: ($max_held <= $holders and $samples > 10),
        paid_is_every_payment_taken: ($figures.holders_paid == ($o.paid // 0) + ($pay.answers_lost.paid // 0)),
        every_payment_answered_once: ($pay.misanswered == 0 and $offers_pay.misanswered == 0),
        every_unpaid_hold_expired: ($figures.holders_expired == $holders - $figures.holders_paid
                                    and $figures.holders_awaiting == 0),
        no_order_paid_twice: ($figures.orders_paid_twice == 0),
        forged_deliveries_refused: (($o["401 WEBHOOK_SIGNATURE_INVALID"] // 0) == $forged),
        duplicates_answered_as_such: (($o["duplicate paid"] // 0) + ($o["duplicate refund_required"] // 0)
                                      == 2 * $dups + ([$pay.answers_lost[]] | add // 0)),
        every_waiter_joined: ($joined.answers["201"] == $waiters),
        returned_units_offered_to_waiters_first: ($figures.waiters_offered == $waiters
                                                  and $figures.still_waiting == 0
                                                  and $figures.shoppers_offered_twice == 0),
        offers_in_join_order: ($figures.offers_out_of_join_order == 0),
        offers_paid: ($figures.offers_paid == $waiters
                      and ($offers_pay.outcomes.paid // 0) + ($offers_pay.answers_lost.paid // 0) == $waiters),
        returned_units_sold_again: ($l.accepted > 0
                                    and $l.accepted <= $figures.holders_expired - $figures.waiters_offered
                                    and $figures.late_buyers_orders == $l.accepted),
        nothing_owed_to_redis: ($figures.units_owed_to_redis == 0),
        invariants_hold: $d.passed,
        redis_agrees: $redis_agrees
      } }
    | .passed = ([.checks[]] | all)' >"$DIR/result.json"
  report_hold_scenario '.figures.holders_paid + .figures.holders_expired + .figures.late_buyers_orders' \
    '.figures.orders_paid_twice'
}

# cancel-holds: CHAOS_CANCEL_HOLDERS (25,000) shoppers each hold the unit
# they bought (for CHAOS_CANCEL_HOLD_SECS, 120 s: none expires here), and
# half of them start paying. One second into the payments an operator
# cancels the sale; worker-0 is killed -9 once the sweep has begun
# cancelling the holds, and started again. Before 2026-12-03 the cancel ended every hold in
# its own transaction, past the 1 s bound at this many holds: 503 on every
# retry, a sale that could not be cancelled. Now the cancel changes only the
# sale, payments arriving after it are refunded, and the sweep ends the
# holds in batches.
scenario_cancel_holds() {
  local holders=${CHAOS_CANCEL_HOLDERS:-25000} hold=${CHAOS_CANCEL_HOLD_SECS:-120}
  local buy payer paid cancel_status cancel_started cancelled_at figures killed_at cancelled_when_killed
  SCENARIO=cancel-holds
  open_hold_sale "$holders" "$hold"
  python3 "$HOLD_STORM" login "$BASE" "canceller-$CHAOS_RUN_ID" "$holders" 32 >"$DIR/holders.tokens"
  buy=$(python3 "$HOLD_STORM" buy "$BASE" "$DIR/holders.tokens" "$SALE_ID" 64)
  log "[cancel-holds] bought: $buy"
  wait_for 120 all_held_orders_written "$holders" \
    || die "[cancel-holds] the worker did not write $holders orders"

  payments_of_every_other_order "'pay'" >"$DIR/payments.txt"
  python3 "$HOLD_STORM" pay "$BASE" "$FLASHSALE_WEBHOOK_SECRETS" "$DIR/payments.txt" 32 >"$DIR/payments.json" &
  payer=$!
  sleep 1
  cancel_started=$(now_ms)
  cancel_status=$(admin_patch '{"action":"cancel"}')
  cancelled_at=$(now_ms)
  fault "the sale cancelled with $holders holds awaiting payment, 1 s into $(wc -l <"$DIR/payments.txt") payments: answered $cancel_status in $((cancelled_at - cancel_started)) ms"
  # Killed once the sweep has begun on the holds (a first run killed it
  # 0.3 s after the cancel, before any sweep: 0 cancelled by then).
  wait_for 10 holds_cancelled_by_the_sweep || log "[cancel-holds] no hold cancelled 10 s after the cancel"
  kill -9 "$(pid_of "$RUN_DIR/worker-0.pid")" 2>/dev/null || true
  killed_at=$(now_ms)
  cancelled_when_killed=$(sale_orders "status = 'cancelled'")
  fault "kill -9 of worker-0 as the sweep cancels the holds ($cancelled_when_killed of them cancelled by then), restarted at once"
  restart_worker 0 "$FAILPOINT_WORKER"
  wait "$payer" || die "[cancel-holds] the payments failed"
  paid=$(cat "$DIR/payments.json")
  log "[cancel-holds] payments: $paid"
  wait_for 60 nothing_awaiting_or_owed || log "[cancel-holds] holds still awaiting or owed after 60 s"
  RECOVERY_SECS=$(elapsed_since "$killed_at")
  local agreed=false
  if wait_for 30 redis_agrees; then agreed=true; fi

  figures=$(psql_query "select json_build_object(
      'paid', count(*) filter (where o.status = 'paid'),
      'cancelled', count(*) filter (where o.status = 'cancelled'),
      'awaiting', count(*) filter (where o.status = 'awaiting_payment'),
      'expired', count(*) filter (where o.status = 'expired'),
      'units_owed_to_redis', count(*) filter (where o.status = 'cancelled' and o.units_returned_at is null),
      -- A payment that reached a node after the cancel was answered must
      -- not have been taken (received_at is the node's clock at arrival).
      'paid_after_the_cancel', (select count(*) from payment_events e
                                where e.outcome = 'paid' and e.order_id in (select id from orders where flash_sale_id = '$SALE_ID')
                                  and e.received_at > to_timestamp($cancelled_at / 1000.0)),
      'refunded_after_the_cancel', (select count(*) from payment_events e
                                    where e.outcome = 'refund_required' and e.order_id in (select id from orders where flash_sale_id = '$SALE_ID')
                                      and e.received_at > to_timestamp($cancelled_at / 1000.0)),
      'cancelled_when_killed', $cancelled_when_killed,
      'cancel_wave_ms', round(extract(epoch from max(o.ended_at) filter (where o.status = 'cancelled')
                                      - to_timestamp($cancelled_at / 1000.0)) * 1000))
    from orders o where o.flash_sale_id = '$SALE_ID'")
  psql_query "select flash_sale_invariants('$SALE_ID')" >"$DIR/postgres.json"
  jq -n --arg sale_id "$SALE_ID" --argjson buy "$buy" --argjson pay "$paid" --argjson figures "$figures" \
    --slurpfile db "$DIR/postgres.json" --argjson holders "$holders" --arg cancel_status "$cancel_status" \
    --argjson cancel_ms "$((cancelled_at - cancel_started))" --argjson recovery_secs "$RECOVERY_SECS" \
    --argjson redis_agrees "$agreed" --argjson faults "$(printf '%s\n' "${FAULTS[@]}" | jq -R . | jq -s .)" \
    '($pay.outcomes) as $o | ($db[0]) as $d |
    { scenario: "cancel-holds", sale_id: $sale_id, faults: $faults, recovery_secs: $recovery_secs,
      holders: $holders, buy: $buy, payments: $pay, cancel_status: $cancel_status, cancel_ms: $cancel_ms,
      figures: $figures, invariants: $d,
      checks: {
        every_holder_held: ($buy.answers["202"] == $holders),
        the_cancel_answered_at_once: ($cancel_status == "200"),
        no_payment_taken_after_the_cancel: ($figures.paid_after_the_cancel == 0),
        paid_is_every_payment_taken: ($figures.paid == ($o.paid // 0) + ($pay.answers_lost.paid // 0)),
        every_payment_answered_once: ($pay.misanswered == 0),
        every_unpaid_hold_cancelled: ($figures.cancelled == $holders - $figures.paid
                                      and $figures.awaiting == 0 and $figures.expired == 0),
        nothing_owed_to_redis: ($figures.units_owed_to_redis == 0),
        invariants_hold: $d.passed,
        redis_agrees: $redis_agrees
      } }
    | .passed = ([.checks[]] | all)' >"$DIR/result.json"
  report_hold_scenario '.figures.paid + .figures.cancelled' '.invariants.orders_sharing_a_reservation'
}
