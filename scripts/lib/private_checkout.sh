# shellcheck shell=bash
# A newcomer's first run, checked by scripts/test: this checkout copied into
# a private (mode 700) directory that neither the postgres user nor nginx's
# workers can enter, brought up by its own scripts/up on spare ports from
# another working directory, used through nginx, then stopped and purged
# with its scripts/down. On the way, a third state directory asks for the
# ports the copy holds and must be told, in one line, whose they are.
# Sourced after lib/services.sh.

# A TCP port nothing listens on, not in $TAKEN_PORTS (which it joins).
TAKEN_PORTS=" "
spare_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    [[ $TAKEN_PORTS == *" $port "* ]] && continue
    port_listener "$port" >/dev/null && continue
    TAKEN_PORTS+="$port "
    echo "$port"
    return 0
  done
}

# check_private_checkout OUT_DIR: exits through die on the first failure.
check_private_checkout() {
  local out=$1 parent copy other pg redis public api worker answer
  mkdir -p "$out"
  parent=$(mktemp -d)
  other=$(mktemp -d)
  chmod 700 "$parent" "$other"
  copy=$parent/flashsale
  mkdir "$copy"
  # The working tree as it is (committed or not), with its mtimes, so that
  # cargo, sharing this checkout's target directory, has nothing to rebuild.
  git -C "$FLASHSALE_ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$FLASHSALE_ROOT" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$copy"
  pg=$(spare_port) redis=$(spare_port) public=$(spare_port) api=$(spare_port) worker=$(spare_port)
  local -a ports=(FLASHSALE_PG_PORT="$pg" FLASHSALE_REDIS_PORT="$redis" FLASHSALE_PORT="$public"
    FLASHSALE_API_BASE_PORT="$api" FLASHSALE_WORKER_METRICS_BASE_PORT="$worker"
    FLASHSALE_API_NODES=1 FLASHSALE_WORKERS=1 CARGO_TARGET_DIR="$(dirname "$RELEASE_DIR")")

  log "private checkout: $copy (mode 700) up on spare ports (log: $out/up.log)"
  (cd / && env -u FLASHSALE_STATE_DIR "${ports[@]}" "$copy/scripts/up") >"$out/up.log" 2>&1 \
    || { tail -n 20 "$out/up.log"; die "scripts/up failed in a private checkout; see $out/up.log"; }
  curl -fsS "http://127.0.0.1:$public/api/health/ready" >/dev/null \
    || die "the private checkout's cluster is not ready on port $public"
  curl -fsS "http://127.0.0.1:$public/api/flash-sale/status" >"$out/status.json" \
    || die "the private checkout's demo sale does not answer; see $out/status.json"
  grep -q "ready to accept connections" "$copy/.state/logs/postgres.log" \
    || die "the private checkout's PostgreSQL log is not readable from .state/logs"

  log "private checkout: another state directory asking for its ports is told whose they are"
  answer=$(cd / && FLASHSALE_STATE_DIR=$other FLASHSALE_PG_PORT=$pg "$FLASHSALE_ROOT/scripts/up" 2>&1) \
    && die "scripts/up started on a PostgreSQL port another checkout holds"
  [[ $answer == *"port $pg (PostgreSQL) is held by"*"checkout $copy;"*"$copy/scripts/down"* ]] \
    || die "the PostgreSQL port conflict was not explained: $answer"
  answer=$(cd / && FLASHSALE_STATE_DIR=$other FLASHSALE_PG_PORT=$(spare_port) FLASHSALE_REDIS_PORT=$redis \
    "$FLASHSALE_ROOT/scripts/up" 2>&1) && die "scripts/up started on a Redis port another checkout holds"
  [[ $answer == *"port $redis (Redis) is held by"*"checkout $copy;"* ]] \
    || die "the Redis port conflict was not explained: $answer"
  FLASHSALE_STATE_DIR=$other "$FLASHSALE_ROOT/scripts/down" --purge >>"$out/down.log" 2>&1

  log "private checkout: scripts/down --purge"
  (cd / && "$copy/scripts/down" --purge) >>"$out/down.log" 2>&1 || die "scripts/down failed; see $out/down.log"
  local port
  for port in "$pg" "$redis" "$public" "$api" "$worker"; do
    ! port_listener "$port" >/dev/null || die "port $port still held after the private checkout's scripts/down"
  done
  [[ ! -e $copy/.state ]] || die "scripts/down --purge left $copy/.state"
  rm -rf "$parent" "$other"
}
