# shellcheck shell=bash
# Shared by scripts/up, scripts/test, scripts/down and scripts/bench: where the
# project's own PostgreSQL and Redis live, and how to install, start, reuse and
# stop them. Sourced, not executed.
#
# Everything lives under $FLASHSALE_STATE_DIR (default: .state/ in the
# checkout, git-ignored). Ports are non-default so a system PostgreSQL (5432)
# or Redis (6379) is never touched.

FLASHSALE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE_DIR=${FLASHSALE_STATE_DIR:-$FLASHSALE_ROOT/.state}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
PG_PORT=${FLASHSALE_PG_PORT:-55432}
REDIS_PORT=${FLASHSALE_REDIS_PORT:-56379}
REDIS_APPENDONLY=${FLASHSALE_REDIS_APPENDONLY:-yes}
REDIS_APPENDFSYNC=${FLASHSALE_REDIS_APPENDFSYNC:-everysec}
PG_DATABASE=flashsale
DATABASE_URL_LOCAL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE"
REDIS_URL_LOCAL="redis://127.0.0.1:$REDIS_PORT"

mkdir -p "$LOG_DIR" "$RUN_DIR"

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
# package creates. Its data directory must be reachable by that user: under
# the state directory when possible, else under /var/lib/flashsale.
pg_data_dir() {
  local preferred=$STATE_DIR/postgres
  if [[ -n ${FLASHSALE_PG_DATA:-} ]]; then
    echo "$FLASHSALE_PG_DATA"
  elif [[ $(id -u) != 0 ]] || runuser -u postgres -- test -x "$STATE_DIR" 2>/dev/null; then
    echo "$preferred"
  else
    echo "/var/lib/flashsale/$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-12)/postgres"
  fi
}

as_pg_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }

start_postgres() {
  local bin data
  bin=$(pg_bin) || die "PostgreSQL binaries not found under /usr/lib/postgresql"
  data=$(pg_data_dir)
  if [[ -s $data/postmaster.pid ]] && as_pg_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT ($data)"
  else
    if [[ ! -s $data/PG_VERSION ]]; then
      log "initialising PostgreSQL in $data"
      mkdir -p "$data"
      [[ $(id -u) == 0 ]] && chown postgres:postgres "$data" "$(dirname "$data")"
      chmod 700 "$data"
      # Trust on loopback only: a local development and test instance.
      as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
        >"$LOG_DIR/postgres-init.log" 2>&1 || die "initdb failed; see $LOG_DIR/postgres-init.log"
    fi
    touch "$LOG_DIR/postgres.log"
    [[ $(id -u) == 0 ]] && chown postgres "$LOG_DIR/postgres.log"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$LOG_DIR/postgres.log" -w -t 60 start -o \
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
  mkdir -p "$STATE_DIR/redis"
  log "starting Redis on 127.0.0.1:$REDIS_PORT (appendonly $REDIS_APPENDONLY, appendfsync $REDIS_APPENDFSYNC)"
  # noeviction: Redis holds stock counters; evicting one would invent stock.
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
    --daemonize yes --pidfile "$pidfile" --logfile "$LOG_DIR/redis.log" \
    --dir "$STATE_DIR/redis" --save '' \
    --appendonly "$REDIS_APPENDONLY" --appendfsync "$REDIS_APPENDFSYNC" \
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
