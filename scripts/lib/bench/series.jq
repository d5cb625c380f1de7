# scripts/bench --repeat: one summary of several runs' result documents
# (jq --slurp). Rates on a shared machine move ±30 % from run to run, and
# the probe's with them, so a series reports each figure's median with its
# range; the ratio's median pairs every run with its own probe.
def median: sort | if length == 0 then null
  elif length % 2 == 1 then .[length / 2 | floor]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def spread($values): ($values | map(select(. != null))) as $known
  | if ($known | length) == 0 then null
    else {median: ($known | median), min: ($known | min), max: ($known | max), runs: $values} end;

{
  runs: length,
  stock: .[0].run.stock,
  users: .[0].run.users,
  concurrency: .[0].run.concurrency,
  attempts_per_s: spread(map(.load.attempts_per_s)),
  ratio_to_ceiling: spread(map(.load.ratio_to_ceiling)),
  probe_nginx_buy_rps: spread(map(.ceiling.nginx_buy_rps)),
  p99_ms: spread(map(.load.latency_ms.p99)),
  first_reservation_to_last_order_s: spread(map(.drain.first_reservation_to_last_order_s)),
  redis_cpu_us_per_accepted: spread(map(.redis_cpu_us_per_accepted)),
  passed: (map(.checks.passed) | all),
  runs_passed: (map(select(.checks.passed)) | length)
}
