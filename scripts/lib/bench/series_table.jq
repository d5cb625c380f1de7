# scripts/bench --repeat's table, from the series summary (series.jq).
def row($name; $value): "  \($name)\(" " * (34 - ($name | length)))\($value)";
def figure($name; $spread; $unit):
  if $spread == null then row($name; "n/a")
  else row($name; "median \($spread.median)\($unit)  (\($spread.min) – \($spread.max); runs: \($spread.runs | map(if . == null then "n/a" else tostring end) | join(", ")))") end;

"",
"flashsale bench series: \(.runs) runs, S=\(.stock) N=\(.users) concurrency \(.concurrency)",
figure("attempts/s (through nginx)"; .attempts_per_s; ""),
figure("ratio to the probe"; .ratio_to_ceiling; ""),
figure("probe through nginx, /s"; .probe_nginx_buy_rps; ""),
figure("latency p99"; .p99_ms; " ms"),
figure("first reservation → last order"; .first_reservation_to_last_order_s; " s"),
figure("Redis CPU per accepted purchase"; .redis_cpu_us_per_accepted; " µs"),
row("checks"; if .passed then "passed in every run" else "FAILED in \(.runs - .runs_passed) of \(.runs) runs" end),
""
