# shellcheck shell=bash
# The load tests' documentation, checked by scripts/test: every command in
# a `sh` block of loadtests/README.md runs as written (from the directory
# the README says), against a fresh sale of 300 units so that the 500
# shoppers of the stampede recipe meet a sale that sells out. A goose run
# passes when goose reports no failure at all, the scenario's purchase
# answers add up (300 accepted, 200 sold out), and PostgreSQL holds exactly
# 300 orders for the sale. Sourced after lib/services.sh, lib/cluster.sh and
# lib/bench/steps.sh.

# The commands of loadtests/README.md's sh blocks: continuation lines
# joined, comments and blank lines dropped, one per line.
loadtests_readme_commands() {
  awk '/^```sh$/ { inside = 1; next } /^```$/ { inside = 0; next } inside' \
    "$FLASHSALE_ROOT/loadtests/README.md" \
    | sed -e 's/[[:space:]]*#.*$//' | sed -e ':join' -e '/\\$/ { N; s/\\\n[[:space:]]*/ /; b join }' \
    | grep -v '^[[:space:]]*$'
}

# check_loadtests_readme OUT_DIR ADMIN_TOKEN: exits through die on failure.
check_loadtests_readme() {
  local out=$1 token=$2 base=http://127.0.0.1:$PUBLIC_PORT command index=0 sale report
  mkdir -p "$out"
  while IFS= read -r command; do
    index=$((index + 1))
    case $command in
      "cd loadtests") continue ;; # the cargo commands below run there
      *scripts/up*)
        log "loadtests README, command $index: $command"
        (cd "$FLASHSALE_ROOT" && eval "$command") >"$out/command-$index.log" 2>&1 \
          || die "the load tests' README command '$command' failed; see $out/command-$index.log" ;;
      cargo\ run*)
        sale=$(create_sale "$base" "$token" 300 "loadtests-$(date +%s%N)")
        report=$out/command-$index.json
        log "loadtests README, command $index against a 300-unit sale: $command"
        # The README's host is the default public port; a cluster moved by
        # FLASHSALE_PORT is reached where it is.
        command=${command//http:\/\/127.0.0.1:8080/$base}
        (cd "$FLASHSALE_ROOT/loadtests" && export LOADTEST_SALE_ID=$sale LOADTEST_RUN_ID=check-$$-$index \
          && eval "$command --report-file '$report'") >"$out/command-$index.log" 2>&1 \
          || die "the load tests' README command '$command' failed; see $out/command-$index.log"
        jq -e '(.errors // {} | length) == 0 and ([.transaction_metrics[].number_of_failures] | add) == 0' \
          "$report" >/dev/null || die "goose reported failures; see $out/command-$index.log"
        grep -Eq '^ 202 accepted +300$' "$out/command-$index.log" \
          && grep -Eq '^ 410 SOLD_OUT +200$' "$out/command-$index.log" \
          || die "the purchase answers are not 300 accepted and 200 sold out; see $out/command-$index.log"
        [[ $(psql_query "select count(*) from orders where flash_sale_id = '$sale'") == 300 ]] \
          || die "the goose stampede did not end as 300 orders of sale $sale" ;;
      *) die "loadtests/README.md documents a command this check does not know how to run: $command" ;;
    esac
  done < <(loadtests_readme_commands)
  ((index > 0)) || die "found no command in loadtests/README.md"
}
