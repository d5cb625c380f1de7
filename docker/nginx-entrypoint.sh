#!/bin/sh
# Renders nginx/nginx.conf.template for the compose topology (the same
# substitutions scripts/lib/cluster.sh makes), then runs nginx in the foreground.
set -eu
work=/var/cache/nginx/flashsale
mkdir -p "$work"
upstreams=""
for node in $(echo "$FLASHSALE_API_NODES" | tr ',' ' '); do
  upstreams="$upstreams        server $node max_fails=3 fail_timeout=2s;\n"
done
sed -e "s|__UPSTREAMS__|$upstreams|" \
    -e "s|__LISTEN__|0.0.0.0:8080|" \
    -e "s|__RATE__|${FLASHSALE_NGINX_RATE:-200}|" \
    -e "s|__BURST__|${FLASHSALE_NGINX_BURST:-400}|" \
    -e "s|__CONN_PER_IP__|${FLASHSALE_NGINX_CONN_PER_IP:-1000}|" \
    -e "s|__MAX_BODY__|${FLASHSALE_NGINX_MAX_BODY:-16k}|" \
    -e "s|__RUN_DIR__|/var/run|" \
    -e "s|__LOG_DIR__|/var/log/nginx|" \
    -e "s|__WORK_DIR__|$work|" \
    /etc/flashsale/nginx.conf.template >/etc/nginx/nginx.conf
exec nginx -g 'daemon off;'
