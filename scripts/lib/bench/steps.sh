# shellcheck shell=bash
# The steps of scripts/bench: talking to the cluster's API, driving wrk, and
# reading how much CPU each component used. Sourced after lib/services.sh and
# lib/cluster.sh.

BENCH_DIR=$FLASHSALE_ROOT/scripts/lib/bench
source "$FLASHSALE_ROOT/scripts/lib/sales.sh"

login_token() {
  local base=$1 email=$2
  curl -fsS "$base/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\"}" | jq -er .token
}

# run_wrk RESULT_FILE CONNECTIONS MODE ARGS...: every request of MODE once
# (scripts/lib/bench/once.lua), summary JSON in RESULT_FILE. wrk's main
# thread sleeps for all of -d; once every wrk thread has written its line to
# RESULT_FILE.finished, SIGINT makes it stop and report. Fails when wrk
# ran out its -d instead (a thread never saw all its answers: a connection
# that could not connect, or answers slower than BENCH_WRK_MAX_SECS).
run_wrk() {
  local result=$1 connections=$2 pid idle status=0 finished=(); shift 2
  rm -f "$result" "$result.finished" "$result.tokens" "$result.idle"
  # The wait below shares the cores with what is measured: it sleeps with
  # bash's own read timing out on a FIFO nobody writes, not by forking
  # sleep(1) 50 times a second (~0.09 CPU s per second of the run).
  mkfifo "$result.idle"
  exec {idle}<>"$result.idle"
  BENCH_RESULT_FILE=$result BENCH_WRK_THREADS=$THREADS BENCH_WRK_CONNECTIONS=$connections \
    wrk -t"$THREADS" -c"$connections" -d"${BENCH_WRK_MAX_SECS:-120}s" --timeout 10s \
    -s "$BENCH_DIR/once.lua" "http://127.0.0.1:$PUBLIC_PORT" -- "$@" {idle}<&- &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    finished=()
    [[ -e $result.finished ]] && mapfile -t finished <"$result.finished"
    if ((${#finished[@]} >= THREADS)); then
      kill -INT "$pid"
      break
    fi
    read -r -t 0.02 -u "$idle" || true
  done
  wait "$pid" || status=$?
  exec {idle}<&-
  rm -f "$result.idle"
  ((status == 0)) || die "wrk exited with status $status"
  [[ -s $result ]] || die "wrk wrote no summary to $result"
  ((${#finished[@]} >= THREADS)) \
    || die "wrk ran out its ${BENCH_WRK_MAX_SECS:-120} s before ${#finished[@]} of its $THREADS threads had every answer; see $result"
}

# Clock ticks used so far by process $1, its live descendants, and the
# children it has already reaped (PostgreSQL's exited backends).
tree_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
    {
      pid = $1
      rest = substr($0, index($0, ") ") + 2)
      split(rest, field, " ")
      parent[pid] = field[2]
      own[pid] = field[12] + field[13]
      reaped[pid] = field[14] + field[15]
    }
    END {
      total = reaped[root]
      for (pid in own) {
        p = pid
        while (p != root && (p in parent)) p = parent[p]
        if (p == root) total += own[pid]
      }
      print total + 0
    }'
}

pid_of() { [[ -s $1 ]] && head -n1 "$1" || echo 0; }

# {"nginx": ticks, "api": ticks, "worker": ticks, "redis": ticks, "postgres": ticks}
# plus "watchers": ticks when the watchers' pid is given as $1.
component_cpu_ticks() {
  local watchers_pid=${1:-} api=0 worker=0 file
  for file in "$RUN_DIR"/api-*.pid; do api=$((api + $(tree_ticks "$(pid_of "$file")"))); done
  for file in "$RUN_DIR"/worker-*.pid; do worker=$((worker + $(tree_ticks "$(pid_of "$file")"))); done
  printf '{"nginx":%d,"api":%d,"worker":%d,"redis":%d,"postgres":%d%s}' \
    "$(tree_ticks "$(pid_of "$RUN_DIR/nginx.pid")")" "$api" "$worker" \
    "$(tree_ticks "$(pid_of "$RUN_DIR/redis.pid")")" \
    "$(tree_ticks "$(pid_of "$(cat "$RUN_DIR/postgres.datadir")/postmaster.pid")")" \
    "${watchers_pid:+,\"watchers\":$(tree_ticks "$watchers_pid")}"
}

# open_watchers BASE SALE TOKENS_FILE W RUN_DIR: starts the load tests'
# `streams watchers` in the background (its pid in watchers_pid) and
# returns once all W streams have their first event.
open_watchers() {
  local base=$1 sale=$2 tokens=$3 count=$4 dir=$5 deadline=$((SECONDS + 120))
  "$LOADTESTS_BIN/streams" watchers --url "$base" --sale "$sale" --tokens "$tokens" -n "$count" \
    --ready "$dir/watchers.users" --expect "$dir/watchers.expect" --out "$dir/watchers.json" \
    2>"$dir/watchers.err" &
  watchers_pid=$!
  until [[ -s $dir/watchers.users ]]; do
    kill -0 "$watchers_pid" 2>/dev/null || die "the watchers stopped: $(tail -n 1 "$dir/watchers.err")"
    ((SECONDS < deadline)) || die "the $count event streams did not all open within 120 s"
    sleep 0.1
  done
}

# settle_watchers SALE RUN_DIR: tells the watchers how many of them have a
# purchase in PostgreSQL, waits for their report, and writes the bench's
# `live` section (scripts/lib/bench/watchers.jq) to RUN_DIR/live.json. Not
# in a subshell: it waits for the watchers, a child of this shell.
settle_watchers() {
  local sale=$1 dir=$2
  psql_file "$BENCH_DIR/watchers.sql" sale_id="$sale" <"$dir/watchers.users" >"$dir/watchers.attempts.json"
  jq 'length' "$dir/watchers.attempts.json" >"$dir/watchers.expect"
  kill -USR1 "$watchers_pid"
  wait "$watchers_pid" || die "the watchers failed: $(tail -n 1 "$dir/watchers.err")"
  jq -n --slurpfile watchers "$dir/watchers.json" --slurpfile attempts "$dir/watchers.attempts.json" \
    -f "$BENCH_DIR/watchers.jq" >"$dir/live.json"
}

# CPU seconds per component between two component_cpu_ticks snapshots, plus
# the load generator's "user sys" seconds from bash's `time`.
cpu_seconds() {
  local before=$1 after=$2 wrk_times=$3
  jq -n --argjson before "$before" --argjson after "$after" \
    --argjson tick "$(getconf CLK_TCK)" --arg wrk "$wrk_times" '
    ($after | with_entries(.value = ((.value - $before[.key]) / $tick)))
    + {load_generator: ($wrk | split(" ") | map(tonumber) | add)}'
}

# run_ceiling_probe RUN_DIR: runs the ceiling probe and prints
# {"direct_buy_rps", "nginx_buy_rps"}, or null (said in the log) when the
# probe is not there or fails; its output goes to RUN_DIR/probe.log.
run_ceiling_probe() {
  local dir=$1 probe line
  probe=${FLASHSALE_CEILING_PROBE:-$FLASHSALE_ROOT/../shared/probes/ceiling/run.sh}
  if [[ ! -x $probe ]]; then
    log "no ceiling probe at $probe (set FLASHSALE_CEILING_PROBE); no ratio"
    echo null
    return
  fi
  log "the ceiling probe, in the same minutes: $probe (log: $dir/probe.log)"
  line=$("$probe" 2>&1 | tee "$dir/probe.log" | grep '^ceiling probe:' || true)
  if [[ $line =~ direct_buy_rps=([0-9.]+)\ nginx_buy_rps=([0-9.]+) ]]; then
    jq -n --argjson direct "${BASH_REMATCH[1]}" --argjson nginx "${BASH_REMATCH[2]}" \
      '{direct_buy_rps: $direct, nginx_buy_rps: $nginx}'
  else
    log "the ceiling probe reported no rate (see $dir/probe.log); no ratio"
    echo null
  fi
}

# purchase_statuses: how the running API nodes (their pid files) have
# answered POST /api/purchase/attempt since each started, by status, from
# their operator listeners' request counters, as one JSON object ({"202":
# n, ...}). The purchase run's wrk counts only below 400 or not
# (once.lua), so the mix by code comes from here, taken before and after
# it. Answers the counters never see (nginx's own, a node's request
# timeout) are what wrk counted beyond them.
purchase_statuses() {
  local file node port
  for file in "$RUN_DIR"/api-*.pid; do
    [[ -e $file ]] || die "no API node is running (no pid file under $RUN_DIR)"
    node=$(basename "$file" .pid)
    port=$((OPERATOR_BASE_PORT + ${node#api-}))
    curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics" \
      || die "API node ${node#api-}'s operator listener (port $port) did not answer /metrics"
  done | awk '/^http_requests_total\{method="POST",route="\/api\/purchase\/attempt",status="[0-9]+"\} / {
      match($0, /status="[0-9]+"/)
      count[substr($0, RSTART + 8, RLENGTH - 9)] += $2
    }
    END { for (status in count) printf "%s %d\n", status, count[status] }' \
    | jq -Rn '[inputs | split(" ") | {(.[0]): (.[1] | tonumber)}] | add // {}'
}
