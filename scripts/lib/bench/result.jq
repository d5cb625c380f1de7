# Builds scripts/bench's result document from wrk's summary ($wrk), the
# API nodes' purchase answers by status before and after it
# ($statuses_before, $statuses_after), what
# PostgreSQL says about the sale ($outcome: outcome.sql, the shared
# invariants with their `checks` and `passed`, plus the bench's figures),
# the CPU used ($cpu), with --watchers what the watching shoppers' streams
# said ($live, else null), the ceiling probe's rates ($ceiling, else
# null), and with --pay-ratio how the holds ended ($holds, else null).
def per_second($count; $seconds): if $seconds > 0 then ($count / $seconds | round) else null end;
def between($from; $to): if $from == null or $to == null then null else ($to - $from) * 1000 | round / 1000 end;

($wrk.duration_us / 1e6) as $seconds
# A 202 is the only answer below 400 a fresh purchase gets: what the
# shoppers were promised, counted by the load generator.
| $wrk.below_400 as $accepted
| ($statuses_after | with_entries(.value -= ($statuses_before[.key] // 0))) as $counted
# A counter that went back: a node restarted during the run.
| ([$counted[] | select(. < 0)] | length > 0) as $node_restarted
| ($counted | with_entries(select(.value > 0))) as $by_nodes
| ($wrk.responses - ([$by_nodes[]] | add // 0)) as $not_counted
| ([$stock, $users] | min) as $expected
| between($outcome.first_order_at; $outcome.last_order_at) as $drain
| {
    run: {
      machine: $machine, sale_id: $sale_id, stock: $stock, users: $users,
      concurrency: $concurrency, api_nodes: $nodes, workers: $workers, wrk_threads: $threads,
      watchers: $watchers,
      started_at: ($started_at | todate)
    },
    load: {
      duration_s: ($seconds * 1000 | round / 1000),
      attempts: $wrk.responses,
      attempts_per_s: per_second($wrk.responses; $seconds),
      # The purchase rate over the probe's rate through nginx, measured in
      # the same minutes on the same machine (issue 19's yardstick).
      ratio_to_ceiling: (if $ceiling == null then null
        else (per_second($wrk.responses; $seconds) / $ceiling.nginx_buy_rps * 100 | round / 100) end),
      answered_below_400: $accepted,
      accepted_per_s: per_second($accepted; $seconds),
      rejected_per_s: per_second($wrk.responses - $accepted; $seconds),
      latency_ms: ($wrk.latency_us | map_values(. / 1000 * 100 | round / 100)),
      # By code as the API nodes' route counters saw them; answers they
      # never see (nginx's own, a node's request timeout) have no code
      # here, only their count.
      status_mix: ($by_nodes + (if $not_counted != 0 then {"not counted by a node": $not_counted} else {} end)),
      socket_errors: $wrk.socket_errors
    },
    drain: {
      # From the first reservation Redis made: the first request, less its
      # own latency (the stampede's first answers take a millisecond or
      # two), unless requests before it were refused. The bench's clock
      # before wrk starts would add wrk's setup, 20,000 prepared requests
      # (~0.05 s); that figure follows it.
      first_reservation_to_last_order_s: between($outcome.first_reservation_at; $outcome.last_order_at),
      wrk_start_to_last_order_s: between($started_at; $outcome.last_order_at),
      first_order_to_last_order_s: $drain,
      orders_per_s: (if $drain == null then null else per_second($outcome.orders; $drain) end)
    },
    outcome: $outcome,
    live: $live,
    holds: $holds,
    ceiling: $ceiling,
    cpu_seconds: ($cpu | map_values(. * 100 | round / 100)),
    # Redis's CPU (its process and its AOF-rewrite children) from the first
    # request until nothing was pending, per accepted purchase.
    redis_cpu_us_per_accepted: (if $accepted > 0 then ($cpu.redis / $accepted * 1e6 | round) else null end),
    checks: {
      expected_orders: $expected,
      orders: $outcome.orders,
      oversold: $outcome.oversold,
      # One unit per shopper: every unit above a shopper's limit is a
      # duplicate purchase.
      duplicates: $outcome.units_over_limit,
      # A 202 whose reservation has not ended (no order, no visible failure).
      lost: ([0, $accepted - $outcome.reservations_ended] | max),
      # The load generator's answers below 400 are the nodes' 202s: else
      # "lost" above would not count what the shoppers were promised.
      promises_agree: ($accepted == ($by_nodes["202"] // 0)),
      node_restarted: $node_restarted,
      # One answer per shopper: fewer means wrk stopped a thread early.
      every_shopper_answered: ($wrk.responses >= $users),
      stock_consistent: ($outcome.confirmed_quantity_matches and $outcome.product_stock_matches),
      # Every invariant PostgreSQL holds (flash_sale_invariants), by name;
      # the three above are figures of some of them.
      invariants: $outcome.checks
    }
  }
| .checks.passed = (
    $outcome.passed and .checks.lost == 0 and .checks.promises_agree
    and (.checks.node_restarted | not) and .checks.every_shopper_answered
    and .checks.orders == .checks.expected_orders
    and (.live == null or .live.passed)
    and (.holds == null or .holds.passed))
