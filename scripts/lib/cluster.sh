# shellcheck shell=bash
# The cluster around the services: API nodes, workers and nginx, each started
# in the background with a pid file under $RUN_DIR and a log under $LOG_DIR.
# Sourced after lib/services.sh.

API_NODES=${FLASHSALE_API_NODES:-2}
WORKERS=${FLASHSALE_WORKERS:-1}
API_BASE_PORT=${FLASHSALE_API_BASE_PORT:-18081}
# Each API node's operator listener (/metrics, /api/health): node I on
# OPERATOR_BASE_PORT+I, on loopback, never behind nginx.
OPERATOR_BASE_PORT=${FLASHSALE_OPERATOR_BASE_PORT:-18181}
WORKER_METRICS_BASE_PORT=${FLASHSALE_WORKER_METRICS_BASE_PORT:-19091}
PUBLIC_PORT=${FLASHSALE_PORT:-8080}
# nginx's limits; empty means the shipped default, which nginx/render.sh
# holds for both deployments.
NGINX_RATE=${FLASHSALE_NGINX_RATE:-}
NGINX_BURST=${FLASHSALE_NGINX_BURST:-}
NGINX_CONN_PER_IP=${FLASHSALE_NGINX_CONN_PER_IP:-}
NGINX_MAX_BODY=${FLASHSALE_NGINX_MAX_BODY:-}
NGINX_CONF=$STATE_DIR/nginx/nginx.conf
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

# nginx workers run as an unprivileged user that must reach their temp and
# cache directories: under the state directory when it can, else /var/tmp.
nginx_work_dir() {
  if [[ $(id -u) != 0 ]] || runuser -u nobody -- test -x "$STATE_DIR" 2>/dev/null; then
    echo "$STATE_DIR/nginx/work"
  else
    echo "/var/tmp/flashsale-nginx-$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-12)"
  fi
}

# Renders nginx/nginx.conf.template into $NGINX_CONF with nginx/render.sh,
# as docker/nginx-entrypoint.sh does for docker compose.
render_nginx_config() {
  local nodes=$1 upstreams=() i work
  work=$(nginx_work_dir)
  mkdir -p "$STATE_DIR/nginx"
  # Traversable by nginx's workers whatever the umask; nginx creates (and
  # hands to its worker user) the directories inside.
  install -d -m 755 "$work"
  for ((i = 0; i < nodes; i++)); do upstreams+=("127.0.0.1:$((API_BASE_PORT + i))"); done
  sh "$FLASHSALE_ROOT/nginx/render.sh" "$FLASHSALE_ROOT/nginx/nginx.conf.template" \
    __UPSTREAMS__="${upstreams[*]}" __LISTEN__="127.0.0.1:$PUBLIC_PORT" \
    __RATE__="$NGINX_RATE" __BURST__="$NGINX_BURST" __CONN_PER_IP__="$NGINX_CONN_PER_IP" \
    __MAX_BODY__="$NGINX_MAX_BODY" __RUN_DIR__="$RUN_DIR" __LOG_DIR__="$LOG_DIR" __WORK_DIR__="$work" \
    >"$NGINX_CONF.new" || die "could not render $NGINX_CONF"
  mv "$NGINX_CONF.new" "$NGINX_CONF"
}

check_nginx_config() {
  render_nginx_config "$API_NODES"
  "$NGINX_BIN" -t -q -p "$STATE_DIR/nginx" -c "$NGINX_CONF" \
    || die "nginx -t rejected $NGINX_CONF"
}

# The signing key of the local cluster: generated once, kept in the state dir.
jwt_secret() {
  local file=$STATE_DIR/jwt_secret
  if [[ ! -s $file ]]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
  fi
  cat "$file"
}

# The local cluster's payment webhook secret (whsec_<base64>, what
# FLASHSALE_WEBHOOK_SECRETS takes): generated once, kept in the state dir.
webhook_secret() {
  local file=$STATE_DIR/webhook_secret
  if [[ ! -s $file ]]; then
    (umask 077; printf 'whsec_%s' "$(head -c 32 /dev/urandom | base64 -w0)" >"$file")
  fi
  cat "$file"
}

# mint_token ARGS...: `flashsale-api token ARGS` with this cluster's key and
# database (shell access is what makes an operator; there is no admin login
# over HTTP). Prints the token; the command's log goes to tokens.log.
mint_token() {
  FLASHSALE_JWT_SECRET=$(jwt_secret) FLASHSALE_DATABASE_URL=$DATABASE_URL_LOCAL \
    "$RELEASE_DIR/flashsale-api" token "$@" 2>>"$LOG_DIR/tokens.log" \
    || die "flashsale-api token $* failed; see $LOG_DIR/tokens.log"
}

# An operator's admin token for scripts (ops@flashsale.local, 12 hours).
admin_token() { mint_token --admin --email ops@flashsale.local --ttl 12h; }

start_background() {
  local name=$1; shift
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  # Not this shell's job: a scenario that kills it should not print "Killed".
  disown $!
}

# start_api_node I: API node I on port API_BASE_PORT+I (operator listener
# on OPERATOR_BASE_PORT+I), waited for.
start_api_node() {
  local port=$((API_BASE_PORT + $1)) operator=$((OPERATOR_BASE_PORT + $1))
  ensure_port_free "$port" "API node $1" FLASHSALE_API_BASE_PORT
  ensure_port_free "$operator" "API node $1 operator listener" FLASHSALE_OPERATOR_BASE_PORT
  FLASHSALE_BIND=127.0.0.1:$port FLASHSALE_OPERATOR_BIND=127.0.0.1:$operator \
    start_background "api-$1" "$RELEASE_DIR/flashsale-api" serve
}

wait_api_node() {
  local port=$((API_BASE_PORT + $1))
  wait_for 30 curl -fsS "http://127.0.0.1:$port/api/health/live" \
    || die "API node $1 did not come up on port $port; see $LOG_DIR/api-$1.log"
}

start_api_nodes() {
  local i
  for ((i = 0; i < API_NODES; i++)); do start_api_node "$i"; done
  for ((i = 0; i < API_NODES; i++)); do wait_api_node "$i"; done
}

# start_worker I [BINARY]: worker I (metrics on WORKER_METRICS_BASE_PORT+I).
start_worker() {
  local port=$((WORKER_METRICS_BASE_PORT + $1))
  ensure_port_free "$port" "worker $1 metrics" FLASHSALE_WORKER_METRICS_BASE_PORT
  FLASHSALE_WORKER_NAME="worker-$1-$$-$RANDOM" FLASHSALE_WORKER_METRICS_ADDR=127.0.0.1:$port \
    start_background "worker-$1" "${2:-$RELEASE_DIR/flashsale-worker}"
}

wait_worker() {
  local port=$((WORKER_METRICS_BASE_PORT + $1))
  wait_for 30 curl -fsS "http://127.0.0.1:$port/metrics" -o /dev/null \
    || die "worker $1 did not come up (metrics on port $port); see $LOG_DIR/worker-$1.log"
}

start_workers() {
  local i
  for ((i = 0; i < WORKERS; i++)); do start_worker "$i"; done
  for ((i = 0; i < WORKERS; i++)); do wait_worker "$i"; done
}

start_nginx() {
  ensure_port_free "$PUBLIC_PORT" nginx FLASHSALE_PORT
  render_nginx_config "$API_NODES"
  "$NGINX_BIN" -p "$STATE_DIR/nginx" -c "$NGINX_CONF" || die "nginx did not start; see $LOG_DIR/nginx-error.log"
  wait_for 15 curl -fsS "http://127.0.0.1:$PUBLIC_PORT/api/health/live" \
    || die "nginx does not answer on port $PUBLIC_PORT; see $LOG_DIR/nginx-error.log"
}

stop_cluster() {
  local pidfile name
  if pid_alive "$RUN_DIR/nginx.pid" nginx; then
    log "stopping nginx"
    stop_pid "$RUN_DIR/nginx.pid" nginx 10
  fi
  for pidfile in "$RUN_DIR"/api-*.pid "$RUN_DIR"/worker-*.pid; do
    [[ -e $pidfile ]] || continue
    name=$(basename "$pidfile" .pid)
    case $name in
      api-*) pid_alive "$pidfile" flashsale-api && log "stopping $name"; stop_pid "$pidfile" flashsale-api 15 ;;
      worker-*) pid_alive "$pidfile" flashsale-worker && log "stopping $name"; stop_pid "$pidfile" flashsale-worker 30 ;;
    esac
  done
}

# Re-renders nginx's configuration (after NGINX_* changed) and reloads it.
reload_nginx() {
  render_nginx_config "$API_NODES"
  "$NGINX_BIN" -p "$STATE_DIR/nginx" -c "$NGINX_CONF" -s reload || die "nginx did not reload"
  sleep 0.5
}
