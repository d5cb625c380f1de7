# One line of the chaos summary table (scripts/chaos prints them under a header).
[ .scenario, .purchase_requests, .accepted_202, .orders, .oversold, .duplicates, .lost,
  .died_with_redis, (.recovery_secs // "-"), (if .passed then "passed" else "FAILED" end) ]
| map(tostring) | join("\t")
