# shellcheck shell=bash
# The attack part of scripts/chaos: per-address and per-user limits through
# nginx (with spoofed X-Forwarded-For), security headers on nginx's own
# answers, slow and idle clients, and schema-driven fuzzing of every
# endpoint (also run by scripts/test). Sourced after lib/chaos/steps.sh.

ABUSE=$FLASHSALE_ROOT/scripts/lib/chaos/abuse.py
FUZZ_VENV=$STATE_DIR/fuzz-venv
SCHEMATHESIS_VERSION=4.32.5

rss_kib() {  # total resident memory of nginx and the API nodes
  local pids
  pids=$(cat "$RUN_DIR"/api-*.pid 2>/dev/null; pgrep -f "nginx: (master|worker)" || true)
  for pid in $pids; do awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'
}

headers_ok() {  # headers_ok FILE: the security headers are each there once
  local name
  for name in x-content-type-options content-security-policy x-frame-options referrer-policy cache-control; do
    (($(grep -ci "^$name:" "$1") == 1)) || return 1
  done
}

# Readiness verdicts the API nodes computed so far (each node reuses one for
# FLASHSALE_READY_CACHE_MS), from their operator listeners.
readiness_checks() {
  local i
  for ((i = 0; i < API_NODES; i++)); do
    curl -s "http://127.0.0.1:$((OPERATOR_BASE_PORT + i))/metrics"
  done | awk '/^flashsale_readiness_checks_total/ { sum += $2 } END { print sum + 0 }'
}

# flooded_latency PATH TOKENS SALE: purchase latencies (one per token, 8 at
# a time) while 8 threads flood PATH through nginx for 6 s; adds the flood's
# answers and the readiness verdicts the nodes computed meanwhile.
flooded_latency() {
  local flood_file=$DIR/flood${1//\//-}.json flood_pid checks_before latency
  checks_before=$(readiness_checks)
  python3 "$ABUSE" flood "$BASE$1" 6 8 >"$flood_file" &
  flood_pid=$!
  sleep 1
  latency=$(python3 "$ABUSE" latency "$BASE/api/purchase/attempt" "$2" "$3" 8)
  wait "$flood_pid"
  jq -c --argjson latency "$latency" --argjson checks $(($(readiness_checks) - checks_before)) \
    '$latency + {probes_answered: (.answers | add), flood_seconds: .seconds, readiness_checks_computed: $checks}' \
    "$flood_file"
}

scenario_abuse() {
  local seconds=5 rate=200 burst=400 flood spoofed one_user token sale_id slow idle rss_before rss_during
  local user_rate=${FLASHSALE_USER_RATE_PER_SEC:-5} user_burst=${FLASHSALE_USER_BURST:-10} headers_pass=true
  SCENARIO=abuse DIR=$CHAOS_RUN_DIR/abuse
  mkdir -p "$DIR"
  log "[abuse] nginx back to its shipped limits: $rate r/s per address, burst $burst"
  NGINX_RATE=$rate NGINX_BURST=$burst reload_nginx

  flood=$(python3 "$ABUSE" flood "$BASE/api/flash-sale/status" "$seconds" 16)
  sleep 3
  spoofed=$(python3 "$ABUSE" flood "$BASE/api/flash-sale/status" "$seconds" 16 --spoof)
  sleep 3
  # One shopper signed in twice, its requests spread over both tokens and
  # over Authorization header variants (nginx picks a node by the raw
  # header): the per-user limit holds across nodes.
  token=$(login_token "$BASE" "abuse-$CHAOS_RUN_ID@load.local")
  second_token=$(login_token "$BASE" "abuse-$CHAOS_RUN_ID@load.local")
  ADMIN_TOKEN=$(admin_token)
  sale_id=$(create_sale "$BASE" "$ADMIN_TOKEN" 1000 "$CHAOS_RUN_ID-abuse")
  one_user=$(python3 "$ABUSE" one-user "$BASE/api/purchase/attempt" "$token,$second_token" "$sale_id" "$seconds" 16)
  sleep 3
  # The same on a sold-out sale: every attempt past the limiter ends
  # SOLD_OUT, and each must still use up the shopper's cluster-wide rate
  # (reserve.lua writes the shopper's next-attempt time when it refuses),
  # or a shopper with two sign-ins polls at both nodes' limits and catches
  # returned units first. Sent to the nodes directly, half the threads
  # each: nginx's hash of four header spellings can put them all on one
  # node, and then only that node's limiter is tested.
  local sold_out_sale sold_out_user buyer_token sold_out_tokens node_urls=() i
  for ((i = 0; i < API_NODES; i++)); do node_urls+=("http://127.0.0.1:$((API_BASE_PORT + i))/api/purchase/attempt"); done
  sold_out_sale=$(create_sale "$BASE" "$ADMIN_TOKEN" 1 "$CHAOS_RUN_ID-sold-out")
  buyer_token=$(login_token "$BASE" "abuse-buyer-$CHAOS_RUN_ID@load.local")
  curl -fsS -o /dev/null "$BASE/api/purchase/attempt" -H "authorization: Bearer $buyer_token" \
    -H 'content-type: application/json' -H "idempotency-key: abuse-buyer-$CHAOS_RUN_ID" \
    -d "{\"sale_id\":\"$sold_out_sale\"}" || die "[abuse] could not buy the one unit of $sold_out_sale"
  # Two sign-ins of a shopper of its own ($token stays the first part's).
  sold_out_tokens=$(login_token "$BASE" "abuse-sold-out-$CHAOS_RUN_ID@load.local"),$(login_token "$BASE" "abuse-sold-out-$CHAOS_RUN_ID@load.local")
  sold_out_user=$(IFS=,; python3 "$ABUSE" one-user "${node_urls[*]}" "$sold_out_tokens" "$sold_out_sale" "$seconds" 16)
  sleep 3

  log "[abuse] admin takeover attempts and operator endpoints from the public port"
  local products_before takeover metrics_public health_public
  products_before=$(psql_query "select count(*) from products")
  takeover=$(python3 "$ABUSE" takeover "$BASE" "$token")
  takeover=$(jq -c --argjson created "$(($(psql_query "select count(*) from products") - products_before))" \
    '. + {products_created: $created}' <<<"$takeover")
  metrics_public=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/metrics")
  health_public=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/health")

  # nginx's own answers carry the headers too: 429 during a flood, 413, 404.
  # Asked until nginx throttles this address (the flood needs a moment to
  # use up the burst), while the flood lasts.
  python3 "$ABUSE" flood "$BASE/api/flash-sale/status" 3 16 >/dev/null &
  local flood_pid=$!
  sleep 0.5
  while kill -0 "$flood_pid" 2>/dev/null; do
    curl -s -o /dev/null -D "$DIR/headers-429.txt" "$BASE/api/flash-sale/status"
    grep -q "^HTTP/1.1 429" "$DIR/headers-429.txt" && break
    sleep 0.1
  done
  wait "$flood_pid"
  head -c 40000 /dev/zero | tr '\0' x | curl -s -o /dev/null -D "$DIR/headers-413.txt" \
    -H 'content-type: application/json' --data-binary @- "$BASE/api/auth/login"
  curl -s -o /dev/null -D "$DIR/headers-404.txt" "$BASE/api/nothing-here"
  curl -s -o /dev/null "$BASE/api/flash-sale/status"
  curl -s -o /dev/null -D "$DIR/headers-cached.txt" "$BASE/api/flash-sale/status"
  for file in "$DIR"/headers-*.txt; do
    headers_ok "$file" || { log "[abuse] missing or repeated security headers in $file"; headers_pass=false; }
  done
  grep -q "^HTTP/1.1 429" "$DIR/headers-429.txt" && grep -qi "^retry-after: 1" "$DIR/headers-429.txt" \
    || { log "[abuse] no 429 with Retry-After during the flood"; headers_pass=false; }
  grep -q "^HTTP/1.1 413" "$DIR/headers-413.txt" || headers_pass=false

  log "[abuse] slow clients and idle connections"
  rss_before=$(rss_kib)
  python3 "$ABUSE" slowloris 127.0.0.1 "$PUBLIC_PORT" 300 25 >"$DIR/slowloris.json" &
  local slow_pid=$!
  sleep 2
  local during_slowloris
  during_slowloris=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/api/health/live")
  wait "$slow_pid"
  slow=$(cat "$DIR/slowloris.json")
  python3 "$ABUSE" idle 127.0.0.1 "$PUBLIC_PORT" 3000 6 >"$DIR/idle.json" &
  local idle_pid=$!
  sleep 3
  rss_during=$(rss_kib)
  local during_idle
  during_idle=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/api/health/live")
  wait "$idle_pid"
  idle=$(tail -n1 "$DIR/idle.json")

  log "[abuse] nginx back to the suite's raised limits"
  NGINX_RATE=1000000 NGINX_BURST=1000000 reload_nginx

  # A readiness flood must cost the nodes nothing: each node computes at
  # most one verdict per cache period however many probes arrive, and
  # purchase latency under it stays that under a liveness flood (which
  # touches nothing).
  log "[abuse] purchase latency under a liveness flood, then a readiness flood"
  local latency_sale live_flood ready_flood
  latency_sale=$(create_sale "$BASE" "$ADMIN_TOKEN" 2000 "$CHAOS_RUN_ID-latency")
  python3 "$ABUSE" login "$BASE" "abuse-live-${CHAOS_RUN_ID,,}" 600 >"$DIR/tokens-live.txt"
  python3 "$ABUSE" login "$BASE" "abuse-ready-${CHAOS_RUN_ID,,}" 600 >"$DIR/tokens-ready.txt"
  live_flood=$(flooded_latency /api/health/live "$DIR/tokens-live.txt" "$latency_sale")
  ready_flood=$(flooded_latency /api/health/ready "$DIR/tokens-ready.txt" "$latency_sale")

  jq -n --argjson flood "$flood" --argjson spoofed "$spoofed" --argjson one_user "$one_user" --argjson sold_out_user "$sold_out_user" \
    --argjson takeover "$takeover" --arg metrics_public "$metrics_public" --arg health_public "$health_public" \
    --argjson live_flood "$live_flood" --argjson ready_flood "$ready_flood" --argjson nodes "$API_NODES" \
    --argjson slow "$slow" --argjson idle "$idle" --argjson seconds "$seconds" \
    --argjson rate "$rate" --argjson burst "$burst" --argjson user_rate "$user_rate" --argjson user_burst "$user_burst" \
    --argjson rss_before "$rss_before" --argjson rss_during "$rss_during" \
    --arg during_slowloris "$during_slowloris" --arg during_idle "$during_idle" --argjson headers_pass "$headers_pass" '
    ($rate * $seconds + $burst) as $ip_bound | ($user_rate * $seconds + $user_burst) as $user_bound |
    { scenario: "abuse",
      per_address: {flood: $flood, spoofed_x_forwarded_for: $spoofed, bound: $ip_bound},
      per_user: ($one_user + {bound: $user_bound}),
      per_user_sold_out: ($sold_out_user + {bound: $user_bound}),
      admin_takeover: $takeover,
      operator_endpoints_from_the_public_port: {metrics: $metrics_public, health: $health_public},
      purchases_under_probe_floods: {liveness_flood: $live_flood, readiness_flood: $ready_flood},
      slowloris: ($slow + {health_during: $during_slowloris}),
      idle_connections: ($idle + {health_during: $during_idle,
        rss_kib_before: $rss_before, rss_kib_during: $rss_during}),
      checks: {
        address_limited: ($flood.not_throttled <= $ip_bound * 1.05 and ($flood.answers["429"] // 0) > 0),
        spoofing_gains_nothing: ($spoofed.not_throttled <= $ip_bound * 1.05 and ($spoofed.answers["429"] // 0) > 0),
        user_limited: ($one_user.answers["202"] == 1 and ($one_user.answers["429 RATE_LIMITED"] // 0) > 0
                       and $one_user.not_throttled <= $user_bound + 2),
        user_limited_when_sold_out: (($sold_out_user.answers["202"] // 0) == 0
                       and ($sold_out_user.answers["410 SOLD_OUT"] // 0) > 0
                       and ($sold_out_user.answers["429 RATE_LIMITED"] // 0) > 0
                       and $sold_out_user.not_throttled <= $user_bound + 2),
        no_admin_takeover: ($takeover.granted == 0 and $takeover.products_created == 0),
        operator_endpoints_not_public: ($metrics_public == "404" and $health_public == "404"),
        readiness_flood_costs_no_more_than_liveness:
          ($ready_flood.p99_ms <= $live_flood.p99_ms * 1.5 + 10),
        readiness_verdicts_reused:
          ($ready_flood.readiness_checks_computed <= $nodes * ($ready_flood.flood_seconds + 2)
           and $ready_flood.probes_answered > 10 * $ready_flood.readiness_checks_computed),
        security_headers_on_nginx_answers: $headers_pass,
        slow_clients_cut_off: ($slow.opened > 0 and $slow.closed_by_server == $slow.opened),
        up_during_slowloris: ($during_slowloris == "200"),
        up_during_idle_flood: ($during_idle == "200"),
        memory_bounded: ($rss_during - $rss_before < 262144)
      } }
    | .passed = ([.checks[]] | all)' >"$DIR/result.json"
  jq -r '[.scenario, "-", "-", "-", "-", "-", "-", "-", "-", (if .passed then "passed" else "FAILED" end)] | join("\t")' \
    "$DIR/result.json" >>"$CHAOS_RUN_DIR/table.txt"
  if jq -e .passed "$DIR/result.json" >/dev/null; then log "[abuse] passed"; else
    log "[abuse] FAILED: $(jq -c '.checks | with_entries(select(.value == false)) | keys' "$DIR/result.json")"
    FAILED_SCENARIOS+=(abuse)
  fi
}

# run_fuzz OUT_DIR: schemathesis (from PyPI, into $FUZZ_VENV) over every
# operation of the OpenAPI document of API node 0, as the admin: no 5xx,
# and every status, content type, header and body as documented. A 503
# UNAVAILABLE is the documented answer when a dependency misses its time
# bound, which a loaded machine can make happen once (one login's upsert
# took over 1 s in one scripts/test run); the fuzzer cannot tell it from a
# fault. So when every failure of a run is such a 503, the run is kept as
# schemathesis-first.log and repeated once, and the repeat must be clean.
run_fuzz() {
  local out=$1
  fuzz_once "$out" && return 0
  fuzz_failed_only_unavailable "$out/schemathesis.log" || return 1
  mv "$out/schemathesis.log" "$out/schemathesis-first.log"
  log "schemathesis saw only 503 UNAVAILABLE (a dependency past its time bound); running it once more (first run: $out/schemathesis-first.log)"
  fuzz_once "$out"
}

# fuzz_failed_only_unavailable LOG: true when the FAILURES of a schemathesis
# log are all "Server error" answers 503 with the code UNAVAILABLE.
fuzz_failed_only_unavailable() {
  awk '
    /^=+ FAILURES =+$/ { in_failures = 1; next }
    in_failures && /^=+ [A-Z ]+ =+$/ { in_failures = 0 }
    !in_failures { next }
    /^- / { failures++; if ($0 != "- ST101 Server error") other++ }
    /^\[[0-9][0-9][0-9]\] / { if ($1 != "[503]") other++ }
    /"code":"/ { if ($0 !~ /"code":"UNAVAILABLE"/) other++ }
    END { exit !(failures > 0 && other == 0) }
  ' "$1"
}

fuzz_once() {
  local out=$1 token
  mkdir -p "$out"
  if [[ ! -x $FUZZ_VENV/bin/schemathesis ]]; then
    python3 -m venv "$FUZZ_VENV" >/dev/null 2>&1 || { install_packages python3-venv; python3 -m venv "$FUZZ_VENV"; }
    log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $FUZZ_VENV"
    "$FUZZ_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >"$out/pip.log" 2>&1 \
      || die "pip could not install schemathesis; see $out/pip.log"
  fi
  token=$(admin_token)
  log "fuzzing every endpoint from the OpenAPI document (schemathesis, log: $out/schemathesis.log)"
  # The event stream never ends, so a fuzzer waiting for its body would
  # only time out; its answers are tested in tests/live_events.rs.
  "$FUZZ_VENV/bin/schemathesis" run "http://127.0.0.1:$API_BASE_PORT/api/openapi.json" \
    -H "Authorization: Bearer $token" --no-color --exclude-path /api/flash-sale/events \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "${FUZZ_MAX_EXAMPLES:-50}" --seed "${FUZZ_SEED:-20261122}" >"$out/schemathesis.log" 2>&1
}
