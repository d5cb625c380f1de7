#!/usr/bin/env bash
# Redis's CPU per reserve.lua call, two builds of the script side by side:
#
#   scripts/lib/bench/reserve_cpu.sh REV_A REV_B [ROUNDS]
#
# REV_A and REV_B are git revisions (the working tree's files: WORKTREE).
# A scratch redis-server (append-only file, everysec, as the project's)
# runs both scripts under redis-benchmark load (50 clients, 16 calls
# pipelined: what the API's multiplexed connections send in a stampede),
# alternating A and B for ROUNDS rounds (default 4), accepted purchases (a
# new shopper per call) and refused ones (a sold-out sale). Redis's own
# used_cpu_user + used_cpu_sys around each batch, divided by the calls,
# is the figure: unlike one call at a time, a busy Redis is never idle
# between calls, so this is CPU, not wake-up latency. Prints a line per
# batch and the medians. Also prints the bytes Redis keeps per accepted
# shopper (MEMORY USAGE of the shoppers hash after a batch, per call).
#
# RESERVE_CPU_CONFIG_A / RESERVE_CPU_CONFIG_B: a Redis setting ("name
# value", e.g. "latency-tracking no") for that build's batches, to compare
# settings with REV_A = REV_B; the setting goes back to what it was before
# the other build's batches.
#
# Ids are shaped like the engine's: user, reservation and idempotency key
# 36 characters each (a UUID's length), so the bytes are what a sale keeps.
set -euo pipefail
cd "$(dirname "$0")/../../.."
REV_A=$1 REV_B=$2 ROUNDS=${3:-4}
PORT=${RESERVE_CPU_PORT:-7481} CALLS=${RESERVE_CPU_CALLS:-200000}
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "something already answers on port $PORT; set RESERVE_CPU_PORT to a free one" >&2
  exit 1
fi
work=$(mktemp -d)
# Stops only the server this run started (its pid file), never another,
# and waits until it is gone before removing its directory.
stop_own_server() {
  local pid
  if [[ -s $work/redis.pid ]]; then
    pid=$(cat "$work/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -rf "$work"
}
trap stop_own_server EXIT

script_at() {
  local rev=$1 file
  for file in record.lua reserve.lua; do
    if [[ $rev == WORKTREE ]]; then cat "src/store/redis/scripts/$file"
    else git show "$rev:src/store/redis/scripts/$file"; fi
  done
}

redis-server --port "$PORT" --dir "$work" --save "" --appendonly yes --appendfsync everysec \
  --daemonize yes --logfile "$work/redis.log" --pidfile "$work/redis.pid"
rcli() { redis-cli -p "$PORT" "$@"; }
# Ours once the server answering names the pid our server wrote.
own_server_answers() {
  [[ -s $work/redis.pid ]] &&
    [[ $(rcli info server 2>/dev/null | sed -n 's/^process_id:\([0-9]*\).*/\1/p') == "$(cat "$work/redis.pid")" ]]
}
for _ in $(seq 50); do own_server_answers && break; sleep 0.1; done
own_server_answers || { echo "the scratch redis-server did not come up on port $PORT; see $work/redis.log" >&2; exit 1; }
declare -A SHA
SHA[A]=$(script_at "$REV_A" > "$work/a.lua" && rcli script load "$(cat "$work/a.lua")")
SHA[B]=$(script_at "$REV_B" > "$work/b.lua" && rcli script load "$(cat "$work/b.lua")")

# Each build's setting, and for a build without one the value the other
# build's setting replaced (read before the first batch).
declare -A DEFAULT_SETTING
for build in A B; do
  setting="RESERVE_CPU_CONFIG_$build"
  if [[ -n ${!setting:-} ]]; then
    name=${!setting%% *}
    DEFAULT_SETTING[$name]=$(rcli config get "$name" | sed -n 2p)
  fi
done
apply_settings() {
  local own="RESERVE_CPU_CONFIG_$1" name value
  for name in "${!DEFAULT_SETTING[@]}"; do rcli config set "$name" "${DEFAULT_SETTING[$name]}" >/dev/null; done
  if [[ -n ${!own:-} ]]; then
    read -r name value <<<"${!own}"
    rcli config set "$name" "$value" >/dev/null
  fi
}

cpu_us() { rcli info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.0f", s * 1e6}'; }

# One sale per build and case, armed by hand: the fields reserve.lua reads.
arm() {
  local sale=$1 stock=$2 now
  now=$(($(date +%s) * 1000))
  rcli hset "$sale:meta" state active starts_at_ms $((now - 60000)) ends_at_ms $((now + 86400000)) \
    per_user_limit 1 stock "$stock" >/dev/null
}

run_batch() {
  local build=$1 case=$2 sale="s-$1-$2-$3" before after
  if [[ $case == accepted ]]; then arm "$sale" 1000000000; else arm "$sale" 0; fi
  apply_settings "$build"
  before=$(cpu_us)
  redis-benchmark -p "$PORT" -c 50 -P 16 -n "$CALLS" -r 1000000000 -q \
    EVALSHA "${SHA[$build]}" 6 "$sale:meta" "$sale:buyers" "$sale:reservations" "$sale:pending" \
    "$sale:shoppers" "$sale:stats" 00000000-0000-7000-8000-__rand_int__ 1 \
    00000000-0000-4000-8000-__rand_int__ 00000000-0000-7000-9000-__rand_int__ 1 1 >/dev/null
  after=$(cpu_us)
  local per_call bytes=""
  per_call=$(echo "scale=2; ($after - $before) / $CALLS" | bc)
  if [[ $case == accepted ]]; then
    bytes=$(( $(rcli memory usage "$sale:shoppers" samples 0) / CALLS ))
  fi
  echo "$build $case round=$3 redis_us_per_call=$per_call${bytes:+ shoppers_bytes_per_call=$bytes}"
  rcli del "$sale:meta" "$sale:buyers" "$sale:reservations" "$sale:pending" "$sale:shoppers" "$sale:stats" >/dev/null
}

echo "A=$REV_A B=$REV_B rounds=$ROUNDS calls per batch=$CALLS"
for round in $(seq "$ROUNDS"); do
  for case in accepted refused; do
    run_batch A "$case" "$round" | tee -a "$work/lines"
    run_batch B "$case" "$round" | tee -a "$work/lines"
  done
done
for build in A B; do
  for case in accepted refused; do
    sed -n "s/^$build $case .*redis_us_per_call=\([0-9.]*\).*/\1/p" "$work/lines" | sort -n |
      awk -v b="$build" -v c="$case" '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "median %s %s: %.2f µs of Redis CPU per call (%s to %s)\n", b, c, m, v[1], v[NR]}'
  done
done
