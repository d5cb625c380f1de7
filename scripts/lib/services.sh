# shellcheck shell=bash
# Shared by scripts/up, scripts/test, scripts/down and scripts/bench: where the
# project's own PostgreSQL and Redis live, and how to install, start, reuse and
# stop them; querying that PostgreSQL; building the load tests' binaries.
# Sourced, not executed.
#
# Everything lives under $FLASHSALE_STATE_DIR (default: .state/ in the
# checkout, git-ignored). Ports are non-default so a system PostgreSQL (5432)
# or Redis (6379) is never touched.

FLASHSALE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE_DIR=${FLASHSALE_STATE_DIR:-$FLASHSALE_ROOT/.state}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
# Where cargo puts release binaries (CARGO_TARGET_DIR moves them).
RELEASE_DIR=${CARGO_TARGET_DIR:-$FLASHSALE_ROOT/target}
[[ $RELEASE_DIR == /* ]] || RELEASE_DIR=$FLASHSALE_ROOT/$RELEASE_DIR
RELEASE_DIR=$RELEASE_DIR/release
# The load tests' binaries (crowd, streams): their own workspace, built
# into its own target/ whatever CARGO_TARGET_DIR says (build_loadtests).
LOADTESTS_BIN=$FLASHSALE_ROOT/loadtests/target/release
PG_PORT=${FLASHSALE_PG_PORT:-55432}
REDIS_PORT=${FLASHSALE_REDIS_PORT:-56379}
REDIS_APPENDONLY=${FLASHSALE_REDIS_APPENDONLY:-yes}
REDIS_APPENDFSYNC=${FLASHSALE_REDIS_APPENDFSYNC:-everysec}
# Redis rewrites its append-only file once it doubled and passed this size.
# Redis's own 64mb is a few tens of thousands of purchases: a rewrite then
# lands mid-sale and its child takes seconds of CPU from the sale.
REDIS_AOF_REWRITE_MIN_SIZE=${FLASHSALE_REDIS_AOF_REWRITE_MIN_SIZE:-512mb}
PG_DATABASE=flashsale
DATABASE_URL_LOCAL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE"
REDIS_URL_LOCAL="redis://127.0.0.1:$REDIS_PORT"

mkdir -p "$LOG_DIR" "$RUN_DIR"
# Names this checkout to whoever finds its processes (port_taken_by below).
printf '%s\n' "$FLASHSALE_ROOT" >"$STATE_DIR/flashsale-checkout"

log() { printf '[flashsale] %s\n' "$*" >&2; }
die() { printf '[flashsale] error: %s\n' "$*" >&2; exit 1; }

# A cold scripts/test writes about 4 GiB (target/ for the workspace and the
# load tests, PostgreSQL's data, Chromium). Says so up front when the disk
# holding the checkout has less, so a later "No space left on device" from
# rustc or PostgreSQL is not a mystery. A warning, not a stop: a warm
# target/ needs far less.
warn_if_disk_is_short() {
  local needed_kib=$((4 * 1024 * 1024)) free_kib
  free_kib=$(df --output=avail -k "$FLASHSALE_ROOT" | tail -n 1 | tr -d ' ')
  if ((free_kib < needed_kib)); then
    log "warning: only $((free_kib / 1024)) MiB free on the disk holding $FLASHSALE_ROOT;" \
      "a cold build and test run needs about 4 GiB (free space, or remove target/ of old checkouts)"
  fi
}

# Writes the page cache's dirty data out now. Left to the kernel, what ran
# before (a test suite creates and drops hundreds of databases: gigabytes)
# is written back mid-run, and PostgreSQL's commits wait behind it for up
# to a second: a benchmark or a fault scenario would measure that instead
# of the engine (a bench's logins met 503s from it).
flush_disk_writes() { sync; }

# Polls "$@" until it succeeds or $1 seconds pass.
wait_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb ]] && { echo "$dir"; return 0; }
  done
  return 1
}

# psql_query [SQL]: one query against the project's database, unaligned,
# one value per line; the SQL from stdin when not given (for queries too
# long for one command-line argument).
psql_query() { "$(pg_bin)/psql" "$DATABASE_URL_LOCAL" -XAtq -v ON_ERROR_STOP=1 ${1:+-c "$1"}; }

# psql_file FILE [NAME=VALUE...]: the SQL of FILE with each psql variable
# set (FILE reads it as :'NAME'), output as psql_query's. FILE's \copy
# ... from pstdin reads this function's standard input.
psql_file() {
  local file=$1 variables=() pair
  shift
  for pair; do variables+=(-v "$pair"); done
  "$(pg_bin)/psql" "$DATABASE_URL_LOCAL" -XAtq -v ON_ERROR_STOP=1 "${variables[@]}" -f "$file"
}

# build_loadtests BIN...: the named binaries of the load tests' workspace,
# into $LOADTESTS_BIN.
build_loadtests() {
  local bins=() name
  for name; do bins+=(--bin "$name"); done
  (cd "$FLASHSALE_ROOT/loadtests" && CARGO_TARGET_DIR=target cargo build --locked --release --quiet "${bins[@]}") \
    || die "building the load tests' $* failed"
}

# Installs the named Debian packages (root only); logs to apt.log.
install_packages() {
  (($# == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing $*; install them (apt-get install $*) or run as root"
  log "installing $* from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed; see $LOG_DIR/apt.log"
  apt-get install -y -qq --no-install-recommends "$@" >>"$LOG_DIR/apt.log" 2>&1 \
    || die "apt-get install $* failed; see $LOG_DIR/apt.log"
}

# Installs the services that are missing. The Debian packages start system
# instances on the default ports; ours are separate, and those are left as
# the package set them up.
ensure_packages() {
  local missing=()
  pg_bin >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  install_packages "${missing[@]}"
}

# Headless Chromium and its WebDriver, for the browser test.
ensure_browser() {
  local missing=()
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  install_packages "${missing[@]}"
}

# The pid of the process listening on TCP port $1 (any address), read from
# /proc so no ss or lsof is needed; "?" when the listener's process is not
# visible to this user. Fails when nothing listens there.
port_listener() {
  local port_hex inode socket
  port_hex=$(printf ':%04X' "$1")
  inode=$(awk -v port="$port_hex" '$4 == "0A" && substr($2, length($2) - 4) == port { print $10; exit }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [[ -n $inode ]] || return 1
  socket=$(find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" -print -quit 2>/dev/null)
  socket=${socket#/proc/}
  echo "${socket%%/*}" | grep . || echo "?"
}

# The flashsale checkout process $1 belongs to, if any. Every service of a
# checkout runs from, or names, a path inside its state directory (which
# holds a flashsale-checkout file), inside /var/lib/flashsale (the same), or
# inside the checkout itself; nginx's workers are found through their master.
checkout_of_pid() {
  local pid=$1 parent candidates=() process dir word
  parent=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  for process in "$pid" "$parent"; do
    [[ $process =~ ^[0-9]+$ && $process -gt 1 ]] || continue
    candidates+=("$(readlink "/proc/$process/cwd")" "$(readlink "/proc/$process/exe")")
    for word in $(tr '\0' ' ' <"/proc/$process/cmdline" 2>/dev/null); do
      [[ $word == /* ]] && candidates+=("$word")
    done
  done
  for dir in "${candidates[@]}"; do
    while [[ $dir == /?* ]]; do
      [[ -f $dir/flashsale-checkout ]] && { head -n1 "$dir/flashsale-checkout"; return 0; }
      [[ -f $dir/scripts/lib/services.sh ]] && { echo "$dir"; return 0; }
      dir=$(dirname "$dir")
    done
  done
  return 1
}

# ensure_port_free PORT WHAT VARIABLE: stops with one line naming who holds
# the port (another checkout's service, and how to stop it, or any other
# program) and the variable that picks another port.
ensure_port_free() {
  local port=$1 what=$2 variable=$3 pid name checkout waited=0
  # A process just killed (scripts/chaos kills workers with -9 and starts
  # them again at once) can leave its listening socket behind for a moment,
  # owned by no process any more: give it 2 s to go.
  while pid=$(port_listener "$port") && [[ $pid == "?" ]] && ((waited++ < 20)); do sleep 0.1; done
  pid=$(port_listener "$port") || return 0
  name=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)
  if [[ $pid != "?" ]] && checkout=$(checkout_of_pid "$pid"); then
    die "port $port ($what) is held by pid $pid ($name) of the flashsale checkout $checkout;" \
      "stop it with $checkout/scripts/down, or run this one on another port: $variable=<free port>"
  fi
  die "port $port ($what) is held by pid $pid (${name:-unknown}), not a flashsale service;" \
    "stop it, or run on another port: $variable=<free port>"
}

# True when the pid in file $1 is alive and its command line contains $2.
pid_alive() {
  local pidfile=$1 expect=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(head -n1 "$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expect"
}

# Sends TERM to the process in pidfile $1 (if its command contains $2), waits
# up to $3 seconds, then KILLs it.
stop_pid() {
  local pidfile=$1 expect=$2 seconds=${3:-15} pid
  pid_alive "$pidfile" "$expect" || { rm -f "$pidfile"; return 0; }
  pid=$(head -n1 "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for "$seconds" bash -c "! kill -0 $pid"; then
    log "$expect (pid $pid) did not stop in ${seconds}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# PostgreSQL refuses to run as root, so it runs as the `postgres` user the
# package creates. Everything that user reads or writes (the data directory
# and the server log inside it) must be reachable by it: under the state
# directory when it can enter it, else under /var/lib/flashsale (a checkout
# in a mode-700 home or temp directory). The server's own log is then
# linked from $LOG_DIR, so every log stays in one place.
pg_data_dir() {
  if [[ -n ${FLASHSALE_PG_DATA:-} ]]; then
    echo "$FLASHSALE_PG_DATA"
  elif [[ $(id -u) != 0 ]] || runuser -u postgres -- test -x "$STATE_DIR" 2>/dev/null; then
    echo "$STATE_DIR/postgres"
  else
    echo "$(pg_home_outside)/postgres"
  fi
}

# This checkout's directory under /var/lib/flashsale (named by a hash of the
# state directory), for a state directory the postgres user cannot enter.
pg_home_outside() {
  echo "/var/lib/flashsale/$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-12)"
}

# Runs "$@" as the owner of PostgreSQL's files, from a working directory that
# user can enter (the checkout may be private).
as_pg_owner() {
  if [[ $(id -u) == 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }

# Creates the data directory and its cluster. Outside the checkout, the
# directory holding it is made traversable (whatever the umask) and names
# the checkout, so a conflict on the port can say whose it is.
init_postgres() {
  local bin=$1 data=$2
  log "initialising PostgreSQL in $data"
  if [[ $data == "$(pg_home_outside)/postgres" ]]; then
    install -d -m 755 /var/lib/flashsale "$(dirname "$data")"
    printf '%s\n' "$FLASHSALE_ROOT" >"$(dirname "$data")/flashsale-checkout"
  fi
  mkdir -p "$data"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$data"
  chmod 700 "$data"
  # Trust on loopback only: a local development and test instance.
  as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
    >"$LOG_DIR/postgres-init.log" 2>&1 || die "initdb failed; see $LOG_DIR/postgres-init.log"
}

start_postgres() {
  local bin data
  bin=$(pg_bin) || die "PostgreSQL binaries not found under /usr/lib/postgresql"
  data=$(pg_data_dir)
  if [[ -s $data/postmaster.pid ]] && as_pg_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT ($data)"
  else
    ensure_port_free "$PG_PORT" PostgreSQL FLASHSALE_PG_PORT
    [[ -s $data/PG_VERSION ]] || init_postgres "$bin" "$data"
    # The server log lives with the data, where the postgres user may write.
    ln -sfn "$data/server.log" "$LOG_DIR/postgres.log"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start -o \
      "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
       -c max_connections=${FLASHSALE_PG_MAX_SERVER_CONNECTIONS:-400} -c shared_buffers=256MB" \
      >/dev/null || die "PostgreSQL did not start; see $LOG_DIR/postgres.log"
  fi
  echo "$data" >"$RUN_DIR/postgres.datadir"
  wait_for 30 pg_ready || die "PostgreSQL not ready on port $PG_PORT; see $LOG_DIR/postgres.log"
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc \
      "select 1 from pg_database where datname = '$PG_DATABASE'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$PG_DATABASE"
  fi
}

stop_postgres() {
  local data bin
  [[ -s $RUN_DIR/postgres.datadir ]] || return 0
  data=$(cat "$RUN_DIR/postgres.datadir")
  bin=$(pg_bin) || return 0
  if [[ -s $data/postmaster.pid ]]; then
    log "stopping PostgreSQL ($data)"
    as_pg_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -f "$RUN_DIR/postgres.datadir"
}

redis_ready() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
  local pidfile=$RUN_DIR/redis.pid
  if pid_alive "$pidfile" redis-server && redis_ready; then
    log "Redis already running on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  ensure_port_free "$REDIS_PORT" Redis FLASHSALE_REDIS_PORT
  mkdir -p "$STATE_DIR/redis"
  log "starting Redis on 127.0.0.1:$REDIS_PORT (appendonly $REDIS_APPENDONLY, appendfsync $REDIS_APPENDFSYNC, rewrite from $REDIS_AOF_REWRITE_MIN_SIZE)"
  # noeviction: Redis holds stock counters; evicting one would invent stock.
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
    --daemonize yes --pidfile "$pidfile" --logfile "$LOG_DIR/redis.log" \
    --dir "$STATE_DIR/redis" --save '' \
    --appendonly "$REDIS_APPENDONLY" --appendfsync "$REDIS_APPENDFSYNC" \
    --auto-aof-rewrite-min-size "$REDIS_AOF_REWRITE_MIN_SIZE" \
    --maxmemory-policy noeviction --maxclients 10000 \
    || die "Redis did not start; see $LOG_DIR/redis.log"
  wait_for 15 redis_ready || die "Redis not ready on port $REDIS_PORT; see $LOG_DIR/redis.log"
}

stop_redis() {
  pid_alive "$RUN_DIR/redis.pid" redis-server || { rm -f "$RUN_DIR/redis.pid"; return 0; }
  log "stopping Redis"
  stop_pid "$RUN_DIR/redis.pid" redis-server 15
}

# PostgreSQL and Redis, installed if needed, started or reused.
start_services() {
  ensure_packages
  start_postgres
  start_redis
  export DATABASE_URL=$DATABASE_URL_LOCAL
  export FLASHSALE_DATABASE_URL=$DATABASE_URL_LOCAL
  export FLASHSALE_REDIS_URL=$REDIS_URL_LOCAL
}
