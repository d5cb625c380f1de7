# shellcheck shell=bash
# The steps every fault scenario of scripts/chaos shares: a sale, a crowd of
# shoppers buying from it in the background, timing the fault against the
# crowd, and the verdict (PostgreSQL, Redis and what the shoppers were told).
# Sourced after lib/services.sh, lib/cluster.sh and lib/bench/steps.sh.

CHAOS_LIB=$FLASHSALE_ROOT/scripts/lib/chaos
CROWD_BIN=$LOADTESTS_BIN/crowd
FAILPOINT_WORKER=$STATE_DIR/chaos/bin/flashsale-worker
BASE=http://127.0.0.1:$PUBLIC_PORT

now_ms() { date +%s%3N; }
json_bool() { if (($1)); then echo true; else echo false; fi; }
redis_cmd() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
elapsed_since() { awk -v now="$(now_ms)" -v start="$1" 'BEGIN { printf "%.2f", (now - start) / 1000 }'; }

# Every chaos sale lets a shopper hold up to 3 units, and the crowd's
# shoppers ask for 1, 2 or 3 (so demand is about twice the stock).
PER_USER_LIMIT=${CHAOS_PER_USER_LIMIT:-3}
MAX_QUANTITY=${CHAOS_MAX_QUANTITY:-3}

# scenario_begin NAME STOCK [PRODUCT_STOCK]: a fresh sale of STOCK units
# (of a new product with PRODUCT_STOCK units, by default STOCK) and a
# directory for the scenario's files. Sets SCENARIO, SALE_ID, PRODUCT_ID, DIR.
scenario_begin() {
  SCENARIO=$1
  DIR=$CHAOS_RUN_DIR/$SCENARIO
  mkdir -p "$DIR"
  ADMIN_TOKEN=$(admin_token)
  PRODUCT_ID=$(create_product "$BASE" "$ADMIN_TOKEN" "${3:-$2}" "BENCH-$CHAOS_RUN_ID-$SCENARIO")
  SALE_ID=$(create_sale "$BASE" "$ADMIN_TOKEN" "$2" "$CHAOS_RUN_ID-$SCENARIO" "$PER_USER_LIMIT" "$PRODUCT_ID")
  FAULTS=() RECOVERY_SECS=null
  log "[$SCENARIO] sale $SALE_ID with $2 units, up to $PER_USER_LIMIT per shopper"
}

# start_crowd USERS RATE [CROWD ARGS...]: shoppers buying in the background;
# returns once they have logged in and started buying.
start_crowd() {
  local users=$1 rate=$2; shift 2
  "$CROWD_BIN" --host "$BASE" --sale-id "$SALE_ID" --run-id "$CHAOS_RUN_ID-$SCENARIO" \
    --users "$users" --rate "$rate" --concurrency "${CHAOS_CONCURRENCY:-200}" --out "$DIR" \
    --max-quantity "$MAX_QUANTITY" "$@" \
    >"$DIR/crowd.out" 2>"$DIR/crowd.log" &
  CROWD_PID=$!
  wait_for 300 grep -q "buying at" "$DIR/crowd.log" \
    || die "[$SCENARIO] the crowd did not start buying; see $DIR/crowd.log"
  log "[$SCENARIO] $users shoppers buying at $rate/s"
}

crowd_running() { kill -0 "$CROWD_PID" 2>/dev/null; }

wait_crowd() {
  wait "$CROWD_PID" || die "[$SCENARIO] the crowd failed; see $DIR/crowd.log"
}

fault() { FAULTS+=("$*"); log "[$SCENARIO] fault: $*"; }

# The sale's accepted reservations not ended yet, their units, and the
# units left, in Redis.
pending_reservations() { redis_cmd zcard "$REDIS_PREFIX:{sale:$SALE_ID}:pending"; }
pending_units() { redis_cmd hget "$REDIS_PREFIX:{sale:$SALE_ID}:stats" pending_units; }
redis_stock() { redis_cmd hget "$REDIS_PREFIX:{sale:$SALE_ID}:meta" stock; }

# redis_agrees: I6, Redis remaining + pending units + PostgreSQL confirmed
# = allotted; or the sale was archived (its keys left Redis by design, once
# PostgreSQL held everything).
redis_agrees() {
  local remaining pending confirmed allotted
  [[ $(psql_query "select archived_at is not null from flash_sales where id = '$SALE_ID'") == t ]] && return 0
  remaining=$(redis_stock)
  pending=$(pending_units)
  pending=${pending:-0}
  read -r confirmed allotted < <(psql_query \
    "select confirmed_quantity, allotted_quantity from flash_sales where id = '$SALE_ID'" | tr '|' ' ')
  [[ -n $remaining ]] && ((remaining + pending + confirmed == allotted))
}

# scenario_end [EXTRA]: waits until Redis and PostgreSQL agree, joins the
# shoppers' stories with PostgreSQL, writes result.json and adds a row to
# the summary. EXTRA is a JSON object (see result.jq): bounds that differ
# from zero, the scenario's own checks and figures.
scenario_end() {
  local agreed=false
  if wait_for "${CHAOS_QUIET_SECS:-60}" redis_agrees; then agreed=true; fi
  psql_file "$CHAOS_LIB/verify.sql" sale_id="$SALE_ID" <"$DIR/shoppers.jsonl" >"$DIR/postgres.json" \
    || die "[$SCENARIO] verify.sql failed"
  jq -n --arg scenario "$SCENARIO" --arg sale_id "$SALE_ID" \
    --argjson state_regressions "$(state_regressions)" \
    --argjson faults "$(printf '%s\n' "${FAULTS[@]}" | jq -R . | jq -s .)" \
    --argjson recovery_secs "$RECOVERY_SECS" --argjson redis_agrees "$agreed" \
    --slurpfile crowd "$DIR/summary.json" --slurpfile db "$DIR/postgres.json" \
    --argjson scenario_extra "${1:-"{}"}" -f "$CHAOS_LIB/result.jq" >"$DIR/result.json"
  jq -r -f "$CHAOS_LIB/row.jq" "$DIR/result.json" >>"$CHAOS_RUN_DIR/table.txt"
  if jq -e '.passed' "$DIR/result.json" >/dev/null; then
    log "[$SCENARIO] passed"
  else
    log "[$SCENARIO] FAILED: $(jq -c '.checks | with_entries(select(.value == false)) | keys' "$DIR/result.json")"
    FAILED_SCENARIOS+=("$SCENARIO")
  fi
  curl -fsS -X PATCH "$BASE/api/admin/flash-sales/$SALE_ID" -H "authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"action":"end"}' >/dev/null 2>&1 || true
}

# state_regressions: 1 if Redis mirrors an older version of the sale than
# PostgreSQL holds (an admin change undone), else 0. A sale Redis no longer
# holds (archived) cannot regress.
state_regressions() {
  local armed current
  armed=$(redis_cmd hget "$REDIS_PREFIX:{sale:$SALE_ID}:meta" version)
  current=$(psql_query "select version from flash_sales where id = '$SALE_ID'")
  if [[ -n $armed ]] && ((armed < current)); then echo 1; else echo 0; fi
}

# seconds_until_ready LIMIT: waits (up to LIMIT s) until the cluster
# reports ready; prints how long that took, or null.
seconds_until_ready() {
  local started
  started=$(now_ms)
  wait_for "$1" curl -fsS "$BASE/api/health/ready" || { echo null; return; }
  elapsed_since "$started"
}

restart_worker() { start_worker "$1" "${2:-}"; wait_worker "$1"; }
