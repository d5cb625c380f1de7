# scripts/bench's one table, from its result document.
def row($name; $value): "  \($name)\(" " * (34 - ($name | length)))\($value)";
def opt: if . == null then "n/a" else tostring end;

"",
"flashsale bench: S=\(.run.stock) N=\(.run.users) concurrency \(.run.concurrency), \(.run.api_nodes) API node(s), \(.run.workers) worker(s)",
row("attempts/s (through nginx)"; "\(.load.attempts_per_s | opt)\(if .ceiling == null then "" else "  ratio=\(.load.ratio_to_ceiling) of the probe's \(.ceiling.nginx_buy_rps)/s" end)"),
row("accepted/s (202)"; .load.accepted_per_s | opt),
row("rejected/s (4xx/5xx)"; .load.rejected_per_s | opt),
row("latency p50 / p95 / p99 / max"; "\(.load.latency_ms.p50) / \(.load.latency_ms.p95) / \(.load.latency_ms.p99) / \(.load.latency_ms.max) ms"),
row("status mix"; .load.status_mix | to_entries | map("\(.key)×\(.value)") | join(" ")),
(if .checks.promises_agree then empty else
  row("wrk's answers < 400 / nodes' 202s"; "\(.load.answered_below_400) / \(.load.status_mix["202"] // 0): they must agree (other purchases on the cluster during the run break this)")
 end),
(if .checks.node_restarted then row("API node counters"; "went back: a node restarted during the run") else empty end),
(if .checks.every_shopper_answered then empty else
  row("answers (shoppers)"; "\(.load.attempts) (\(.run.users)): a wrk thread stopped early")
 end),
row("socket errors"; .load.socket_errors | to_entries | map(select(.value > 0) | "\(.key) \(.value)") | if length == 0 then "none" else join(", ") end),
row("first reservation → last order"; "\(.drain.first_reservation_to_last_order_s | opt) s"),
row("drain rate (first → last order)"; "\(.drain.orders_per_s | opt) orders/s"),
row("orders (expected)"; "\(.checks.orders) (\(.checks.expected_orders))"),
row("oversold / duplicates / lost"; "\(.checks.oversold) / \(.checks.duplicates) / \(.checks.lost)"),
row("stock consistent in PostgreSQL"; .checks.stock_consistent),
(.checks.invariants | map_values(select(. == false)) | keys
 | if length == 0 then empty else row("invariants broken"; join(", ")) end),
(if .live == null then empty else
  (.live as $live
   | row("watching shoppers' streams"; "\($live.streams), \($live.sale_updates_per_stream_per_s | opt) sale updates/s each"),
     row("outcomes delivered (expected)"; "\($live.delivered) (\($live.with_purchase)), missing \($live.missing), wrong \($live.wrong)"),
     row("settled → stream p50 / p99 / max"; "\($live.settled_to_stream_ms | "\(.p50 | opt) / \(.p99 | opt) / \(.max | opt)") ms"),
     row("accepted → stream p50 / p99 / max"; "\($live.accepted_to_stream_ms | "\(.p50 | opt) / \(.p99 | opt) / \(.max | opt)") ms"),
     row("streams ended early"; $live.streams_ended_early))
 end),
(if .holds == null then empty else
  (.holds as $h
   | row("payments (ratio \($h.pay_ratio))"; "\($h.deliveries) webhooks, \($h.webhook.per_s | opt)/s, p50 / p99 \($h.webhook.latency_ms.p50) / \($h.webhook.latency_ms.p99) ms"),
     row("holds paid / expired (hold \($h.hold_s) s)"; "\($h.paid) / \($h.expired), awaiting \($h.awaiting)"),
     row("expiry holds/s, lag p50/p99/max"; "\(if $h.expired_per_s == null then "in one sweep" else "\($h.expired_per_s)/s over \($h.expiry_wave_s) s" end), \($h.expiry_lag_ms.p50 | opt) / \($h.expiry_lag_ms.p99 | opt) / \($h.expiry_lag_ms.max | opt) ms after the grace"))
 end),
row("CPU seconds"; .cpu_seconds | to_entries | map("\(.key) \(.value)") | join(", ")),
row("Redis CPU per accepted purchase"; "\(.redis_cpu_us_per_accepted | opt) µs"),
row("checks"; if .checks.passed then "passed" else "FAILED" end),
""
