# shellcheck shell=bash
# The fault scenarios of scripts/chaos, one function each (RELIABILITY.md
# describes them). Each runs a crowd of shoppers against a fresh sale,
# injects its fault while they buy, and ends with scenario_end, which checks
# the invariants. Sourced after lib/chaos/steps.sh.

# 1. Worker kill -9 every few seconds during a 20,000-reservation drain;
# each killed worker is restarted at once, as a supervisor would.
scenario_worker_kill() {
  local users=${CHAOS_DRAIN_USERS:-20000} kills=0 last_kill
  scenario_begin worker-kill "$users"
  start_crowd "$users" 2500
  sleep 2
  while crowd_running && ((kills < 20)) && { (($(pending_reservations) > 0)) || ((kills < 3)); }; do
    kill -9 "$(pid_of "$RUN_DIR/worker-$((kills % WORKERS)).pid")" 2>/dev/null || true
    last_kill=$(now_ms)
    kills=$((kills + 1))
    restart_worker "$((( kills - 1) % WORKERS))"
    sleep 3
  done
  fault "kill -9 of a worker every 3 s, $kills times, each restarted at once"
  wait_for 300 bash -c "(( \$(redis-cli -p $REDIS_PORT zcard '$REDIS_PREFIX:{sale:$SALE_ID}:pending') == 0 ))" || true
  RECOVERY_SECS=$(elapsed_since "$last_kill")
  wait_crowd
  scenario_end "{\"figures\": {\"kills\": $kills}}"
}

# 2. A worker stopped (SIGSTOP) past the orphan-recovery window while it
# holds jobs, then continued: its jobs went to the other worker; when it
# wakes up it finishes them again, and must write nothing twice.
scenario_worker_stop() {
  local users=${CHAOS_USERS:-5000} window stop_secs pid started
  window=$((${FLASHSALE_WORKER_HEARTBEAT_SECS:-2} * ${FLASHSALE_WORKER_MISSED_HEARTBEATS:-3}))
  stop_secs=$((window + 5))
  scenario_begin worker-stop "$users"
  start_crowd "$users" 1000
  sleep 1
  pid=$(pid_of "$RUN_DIR/worker-0.pid")
  kill -STOP "$pid"
  started=$(now_ms)
  fault "SIGSTOP of worker-0 for ${stop_secs}s (orphan window ${window}s), then SIGCONT"
  sleep "$stop_secs"
  kill -CONT "$pid"
  wait_crowd
  RECOVERY_SECS=$(elapsed_since "$started")
  scenario_end "{\"figures\": {\"stopped_secs\": $stop_secs}, \"checks\": {\"zombie_worker_still_running\": $(json_bool "$(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0)")}}"
}

# 3. Redis killed and restarted, without its data (wipe) or with its
# append-only file (crash), while shoppers buy.
scenario_redis_restart() {
  local mode=$1 users=${CHAOS_USERS:-5000} down_secs=3 saw_503 recovery
  scenario_begin "redis-$mode" "$users"
  start_crowd "$users" 500 --give-up-secs 90
  sleep 3
  kill -9 "$(pid_of "$RUN_DIR/redis.pid")"
  if [[ $mode == wipe ]]; then
    rm -rf "$STATE_DIR/redis/appendonlydir" "$STATE_DIR/redis"/*.aof "$STATE_DIR/redis"/*.rdb
    fault "kill -9 of Redis, its data deleted, restarted after ${down_secs}s"
  else
    fault "kill -9 of Redis, restarted after ${down_secs}s from its append-only file (fsync every second)"
  fi
  sleep 1
  saw_503=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/health/ready")
  sleep $((down_secs - 1))
  start_redis
  recovery=$(seconds_until_ready 60)
  RECOVERY_SECS=$recovery
  wait_crowd
  local bound=0 untold=0
  if [[ $mode == wipe ]]; then bound=1000000000 untold=1000000000; else bound='"one_second"'; fi
  scenario_end "{\"died_with_redis_max\": $bound, \"untold_orders_max\": $untold,
    \"figures\": {\"readiness_while_down\": $saw_503, \"ready_after_restart_secs\": $recovery},
    \"checks\": {\"unready_while_down\": $(json_bool "saw_503 == 503"),
                 \"purchases_refused_with_503_while_down\": $(jq '(.purchase_answers["503"] // 0) > 0' "$DIR/summary.json")}}"
}

# 4. PostgreSQL stopped for 10 s mid-drain: purchases are still accepted
# (Redis path), readiness says so, workers retry, all commits afterwards.
scenario_postgres_stop() {
  local users=${CHAOS_USERS:-5000} accepted_before accepted_after ready_while_down restarted
  scenario_begin postgres-stop "$users"
  start_crowd "$users" 400 --give-up-secs 90
  sleep 2
  accepted_before=$(redis_stock)
  stop_postgres
  fault "PostgreSQL stopped (fast shutdown) for 10 s"
  sleep 2
  ready_while_down=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/health/ready")
  curl -s "http://127.0.0.1:$OPERATOR_BASE_PORT/api/health" >"$DIR/health-while-down.json" || true
  sleep 8
  accepted_after=$(redis_stock)
  start_postgres
  restarted=$(now_ms)
  wait_crowd
  RECOVERY_SECS=$(elapsed_since "$restarted")
  scenario_end "{\"figures\": {\"readiness_while_down\": $ready_while_down,
      \"units_reserved_while_down\": $((accepted_before - accepted_after))},
    \"checks\": {\"unready_while_down\": $(json_bool "ready_while_down == 503"),
                 \"purchases_accepted_while_down\": $(json_bool "accepted_before - accepted_after > 0")}}"
}

# 5. One API node killed behind nginx under load, restarted 5 s later.
scenario_node_kill() {
  local users=${CHAOS_USERS:-5000} killed
  scenario_begin node-kill "$users"
  start_crowd "$users" 500
  sleep 3
  kill -9 "$(pid_of "$RUN_DIR/api-0.pid")"
  killed=$(now_ms)
  fault "kill -9 of api-0 under load, restarted after 5 s"
  sleep 5
  start_api_node 0
  wait_api_node 0
  RECOVERY_SECS=$(elapsed_since "$killed")
  wait_crowd
  scenario_end
}

# queue-lost: API node 0 runs the whole crowd with its queue unreachable,
# so its outbox pushes nothing: every purchase it accepts waits in the
# pending set until the reconciler pushes it. What a node killed with
# purchases in its outbox leaves behind, at scale (a kill -9 catches 2 ms
# of them at most).
scenario_queue_lost() {
  local users=${CHAOS_USERS:-5000} reenqueued
  restart_workers_with FLASHSALE_RECONCILE_SCHEDULE='* * * * * *' FLASHSALE_RECONCILE_PENDING_AFTER_SECS=3
  stop_pid "$RUN_DIR/api-0.pid" flashsale-api 30
  (export FLASHSALE_QUEUE_REDIS_URL=redis://127.0.0.1:9; start_api_node 0)
  wait_api_node 0
  scenario_begin queue-lost "$users"
  start_crowd "$users" 500
  fault "API node 0 started with its queue on a closed port: its outbox pushes failed for the whole crowd"
  wait_crowd
  stop_pid "$RUN_DIR/api-0.pid" flashsale-api 30
  start_api_node 0
  wait_api_node 0
  wait_for 60 bash -c "(( \$(redis-cli -p $REDIS_PORT zcard '$REDIS_PREFIX:{sale:$SALE_ID}:pending') == 0 ))" || true
  reenqueued=$(cat "$LOG_DIR"/worker-*.log | grep -F "$SALE_ID" | grep -F 're-enqueued' \
    | jq -s 'map(.count) | add // 0')
  scenario_end "{\"figures\": {\"reenqueued_by_the_reconciler\": $reenqueued},
    \"checks\": {\"the_reconciler_pushed_what_node_0_accepted\": $(json_bool "$((reenqueued > 0))")}}"
  restart_workers_with FLASHSALE_RECONCILE_SCHEDULE='*/2 * * * * *'
}

# 6. Redis stalled twice for 3 s, once frozen (SIGSTOP: a stuck disk or
# fork) and once pausing its clients (CLIENT PAUSE): requests answer 503
# within the dependency bound instead of hanging; no restart needed.
scenario_redis_slow() {
  local users=${CHAOS_USERS:-5000} redis_pid
  scenario_begin redis-slow "$users"
  start_crowd "$users" 500
  sleep 2
  redis_pid=$(pid_of "$RUN_DIR/redis.pid")
  kill -STOP "$redis_pid"
  sleep 3
  kill -CONT "$redis_pid"
  sleep 2
  redis_cmd client pause 3000 all >/dev/null || die "[redis-slow] CLIENT PAUSE refused"
  sleep 3
  fault "Redis frozen (SIGSTOP) for 3 s, then 2 s later its clients paused (CLIENT PAUSE 3000 ALL)"
  RECOVERY_SECS=$(seconds_until_ready 30)
  wait_crowd
  local max_503 bound
  max_503=$(jq '.purchase_max_latency_ms["503"] // 0' "$DIR/summary.json")
  # A purchase makes at most two Redis calls (reserve, queue push), each
  # bounded by the dependency timeout; the request timeout is the backstop.
  bound=$((${FLASHSALE_REQUEST_TIMEOUT_MS:-5000}))
  scenario_end "{\"figures\": {\"slowest_503_ms\": $max_503, \"bound_ms\": $bound},
    \"checks\": {\"answered_503_while_stalled\": $(jq '(.purchase_answers["503"] // 0) > 0' "$DIR/summary.json"),
                 \"every_503_within_bound\": $(json_bool "max_503 <= bound")}}"
}

# 7. A worker that crashes between its PostgreSQL commit and the acks
# (the failpoint build), replaced by a normal worker: the jobs come back,
# find their orders committed, and nothing is written twice.
scenario_crash_after_commit() {
  local users=${CHAOS_USERS:-5000} i crashed=false
  scenario_begin crash-after-commit "$users"
  for ((i = 0; i < WORKERS; i++)); do stop_pid "$RUN_DIR/worker-$i.pid" flashsale-worker 30; done
  FAILPOINTS="crash-after-commit=2*off->return" start_worker 0 "$FAILPOINT_WORKER"
  wait_worker 0
  start_crowd "$users" 1000
  if wait_for 60 bash -c "! kill -0 $(pid_of "$RUN_DIR/worker-0.pid")"; then crashed=true; fi
  fault "the failpoint worker aborted after its 3rd committing batch, before the Redis steps and the acks"
  grep -h "failpoint crash-after-commit" "$LOG_DIR/worker-0.log" | tail -n1 >"$DIR/crash.txt" || true
  local replaced
  replaced=$(now_ms)
  for ((i = 0; i < WORKERS; i++)); do restart_worker "$i"; done
  wait_crowd
  RECOVERY_SECS=$(elapsed_since "$replaced")
  scenario_end "{\"checks\": {\"failpoint_crashed_the_worker\": $crashed,
                             \"crash_logged\": $([[ -s $DIR/crash.txt ]] && echo true || echo false)}}"
}

# 9. Operators ban 100 shoppers while the crowd buys: 50 holding a pending
# reservation (the workers are stopped for those seconds, so none of them
# is committed yet) and the 50 who start buying last. From one second after
# the bans none of their requests succeeds on any node; the worker releases
# the pending reservations (the account was suspended), and their units are
# sold to other shoppers.
scenario_ban() {
  local users=${CHAOS_USERS:-5000} stock=2000 i pid ban_done emails banned_ids
  local workers=()
  scenario_begin ban "$stock"
  for ((i = 0; i < WORKERS; i++)); do workers+=("$(pid_of "$RUN_DIR/worker-$i.pid")"); done
  kill -STOP "${workers[@]}"
  start_crowd "$users" 500
  sleep 2
  emails=$(for ((i = users - 50; i < users; i++)); do printf "'crowd-%s-ban-%s@load.local'," "${CHAOS_RUN_ID,,}" "$i"; done)
  banned_ids=$( {
    # "<user>|latest" -> "<latest reservation>|<next attempt due>": the
    # users whose field names a reservation.
    redis_cmd hgetall "$REDIS_PREFIX:{sale:$SALE_ID}:shoppers" \
      | awk 'NR % 2 { field = $0; next } field ~ /\|latest$/ && $0 !~ /^\|/ { sub(/\|latest$/, "", field); print field }' \
      | head -n 50
    psql_query "select id from users where issuer = 'local' and subject in (${emails%,})"
  } | sort -u)
  printf '%s\n' "$banned_ids" | jq -R . | jq -s . >"$DIR/banned.json"
  for id in $banned_ids; do
    curl -fsS -X POST "$BASE/api/admin/users/$id/ban" -H "authorization: Bearer $ADMIN_TOKEN" -o /dev/null \
      || die "[$SCENARIO] the ban of $id failed"
  done
  ban_done=$(now_ms)
  fault "$(jq length "$DIR/banned.json") shoppers banned mid-sale (50 holding a pending reservation, 50 not buying yet); the workers stopped from before the crowd until 1 s after"
  sleep 1
  kill -CONT "${workers[@]}"
  wait_crowd
  RECOVERY_SECS=$(elapsed_since "$ban_done")
  jq -s --slurpfile banned "$DIR/banned.json" --argjson grace_end $((ban_done + 1000)) '
    [.[] | select(.user_id as $user | $banned[0] | index($user))] as $b
    | { banned_shoppers: ($b | length),
        tried_after_the_grace: ([$b[] | select((.last_request_ms // 0) > $grace_end)] | length),
        succeeded_after_the_grace: ([$b[] | select((.last_success_ms // 0) > $grace_end)] | length),
        refused_as_suspended: ([$b[] | select(.code == "ACCOUNT_SUSPENDED")] | length) }' \
    "$DIR/shoppers.jsonl" >"$DIR/banned-figures.json"
  local ids_sql released orders_of_banned confirmed
  ids_sql=$(jq -r 'map("'"'"'" + . + "'"'"'::uuid") | join(",")' "$DIR/banned.json")
  released=$(psql_query "select count(*) from purchase_attempts where flash_sale_id = '$SALE_ID'
    and user_id in ($ids_sql) and outcome = 'failed' and reason = 'banned'")
  orders_of_banned=$(psql_query "select count(*) from orders where flash_sale_id = '$SALE_ID' and user_id in ($ids_sql)")
  confirmed=$(psql_query "select confirmed_quantity from flash_sales where id = '$SALE_ID'")
  scenario_end "$(jq -c --argjson released "$released" --argjson orders_of_banned "$orders_of_banned" \
    --argjson confirmed "$confirmed" --argjson stock "$stock" '
    { figures: (. + {pending_released_as_suspended: $released, orders_of_banned: $orders_of_banned}),
      checks: { hundred_banned: (.banned_shoppers == 100),
                every_banned_shopper_tried_after_the_grace: (.tried_after_the_grace == .banned_shoppers),
                no_request_of_a_banned_shopper_succeeded_after_the_grace: (.succeeded_after_the_grace == 0),
                shoppers_banned_before_buying_refused_as_suspended: (.refused_as_suspended == 50),
                pending_reservations_released_as_suspended: ($released == 50),
                no_order_for_a_banned_shopper: ($orders_of_banned == 0),
                released_units_sold_to_others: ($confirmed == $stock) } }' "$DIR/banned-figures.json")"
}
