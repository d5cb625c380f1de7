#!/bin/sh
# Renders nginx/nginx.conf.template for the compose topology with
# nginx/render.sh (mounted at /etc/flashsale/nginx; scripts/lib/cluster.sh
# renders it the same way for scripts/up), then runs nginx in the foreground.
set -eu
work=/var/cache/nginx/flashsale
mkdir -p "$work"
sh /etc/flashsale/nginx/render.sh /etc/flashsale/nginx/nginx.conf.template \
  __UPSTREAMS__="$FLASHSALE_API_NODES" __LISTEN__=0.0.0.0:8080 \
  __RATE__="${FLASHSALE_NGINX_RATE:-}" __BURST__="${FLASHSALE_NGINX_BURST:-}" \
  __CONN_PER_IP__="${FLASHSALE_NGINX_CONN_PER_IP:-}" __MAX_BODY__="${FLASHSALE_NGINX_MAX_BODY:-}" \
  __RUN_DIR__=/var/run __LOG_DIR__=/var/log/nginx __WORK_DIR__="$work" \
  >/etc/nginx/nginx.conf
exec nginx -g 'daemon off;'
