#!/bin/sh
# Renders nginx.conf.template, the one way both deployments do it:
# scripts/lib/cluster.sh (scripts/up) and docker/nginx-entrypoint.sh
# (docker compose). POSIX sh and awk only: the nginx image has no bash.
#
#   nginx/render.sh TEMPLATE __NAME__=VALUE... >nginx.conf
#
# Each pair fills one placeholder of TEMPLATE with VALUE as it is (any
# character may be in it). __UPSTREAMS__ takes the API nodes, host:port
# separated by commas or spaces; each becomes a `server` line. The limits
# given empty take the shipped defaults (docs/configuration.md "Rate limits"): __RATE__
# 200 requests/s per address, __BURST__ 400, __CONN_PER_IP__ 1000,
# __MAX_BODY__ 16k. Writes nothing and fails when a value is empty, a
# name is not a placeholder of TEMPLATE, or a placeholder is left unfilled.
set -eu
if [ $# -lt 1 ] || [ ! -r "$1" ]; then
  echo "usage: render.sh TEMPLATE __NAME__=VALUE... (a readable template)" >&2
  exit 2
fi
TEMPLATE=$1
export TEMPLATE
shift
# Only a BEGIN block: awk reads no input, so the pairs stay plain strings
# (never awk's own `name=value` operands) and no escape in them is expanded.
exec awk '
function fail(message) {
    print "nginx/render.sh: " message | "cat 1>&2"
    exit 1
}
function server_lines(nodes,   count, node, i, lines) {
    gsub(/,/, " ", nodes)
    count = split(nodes, node, " ")
    for (i = 1; i <= count; i++)
        lines = lines (i > 1 ? "\n" : "") "        server " node[i] " max_fails=3 fail_timeout=2s;"
    return lines
}
BEGIN {
    template = ENVIRON["TEMPLATE"]
    shipped["__RATE__"] = "200"
    shipped["__BURST__"] = "400"
    shipped["__CONN_PER_IP__"] = "1000"
    shipped["__MAX_BODY__"] = "16k"
    for (i = 1; i < ARGC; i++) {
        split_at = index(ARGV[i], "=")
        name = substr(ARGV[i], 1, split_at - 1)
        value = substr(ARGV[i], split_at + 1)
        if (split_at == 0 || name !~ /^__[A-Z]+(_[A-Z]+)*__$/) fail("not a __NAME__=VALUE pair: " ARGV[i])
        if (value == "" && (name in shipped)) value = shipped[name]
        if (name == "__UPSTREAMS__") value = server_lines(value)
        if (value == "") fail(name " is empty")
        fill[name] = value
    }
    while ((status = (getline line < template)) > 0) {
        rendered = ""
        while (match(line, /__[A-Z]+(_[A-Z]+)*__/)) {
            name = substr(line, RSTART, RLENGTH)
            if (!(name in fill)) fail(template ": nothing fills " name)
            used[name] = 1
            rendered = rendered substr(line, 1, RSTART - 1) fill[name]
            line = substr(line, RSTART + RLENGTH)
        }
        text = text rendered line "\n"
    }
    if (status < 0) fail("cannot read " template)
    for (name in fill)
        if (!(name in used)) fail(template " has no placeholder " name)
    printf "%s", text
}' "$@"
