# One scenario's result: the crowd's summary, PostgreSQL's figures and
# invariants ($db: verify.sql, whose `checks` are flash_sale_invariants'),
# the checks of what the shoppers and Redis saw, and what the scenario adds
# ($scenario_extra):
#   died_with_redis_max: accepted reservations the API may no longer know
#     (0 unless Redis lost data; "one_second": the most 202s of any second)
#   untold_orders_max: orders whose 202 no shopper saw (0 unless Redis lost
#     the idempotency records)
# and $state_regressions: 1 if Redis was left mirroring an older version of
# the sale than PostgreSQL's once quiet
#   checks: {name: bool} the scenario measured itself
#   figures: {name: value} the scenario's own figures
($crowd[0]) as $c | ($db[0]) as $d |
{
  scenario: $scenario,
  sale_id: $sale_id,
  faults: $faults,
  recovery_secs: $recovery_secs,
  requests: ($c.purchase_requests + ($c.other_answers | add // 0)),
  purchase_requests: $c.purchase_requests,
  purchase_answers: $c.purchase_answers,
  purchase_max_latency_ms: $c.purchase_max_latency_ms,
  accepted_202: $c.accepted,
  refused: $c.refused,
  gave_up: $c.gave_up,
  outcomes: $c.outcomes,
  max_202_per_second: ([$c.timeline[] | .["202"] // 0] | max // 0),
  orders: $d.orders,
  oversold: $d.oversold,
  duplicates: ($d.over_limit_buyers + $c.replay_mismatches),
  lost: $d.lost,
  died_with_redis: $d.accepted_not_found,
  state_regressions: $state_regressions,
  promised_stock_refused: $d.promised_stock_refused,
  replays_named_other: $d.replays_named_other,
  postgres: $d,
  redis_agrees: $redis_agrees,
  replay_mismatches: $c.replay_mismatches,
  timed_out: (($c.purchase_answers.timed_out // 0) + ($c.other_answers.timed_out // 0)),
  figures: ($scenario_extra.figures // {})
}
| (if $scenario_extra.died_with_redis_max == "one_second" then .max_202_per_second
   else $scenario_extra.died_with_redis_max // 0 end) as $died_max
| .checks = ($d.checks + {
    no_duplicates: (.duplicates == 0),
    none_lost: (.lost == 0),
    status_never_lies: ($d.told_confirmed_without_order == 0 and $d.told_failed_with_order == 0),
    redis_agrees_once_quiet: .redis_agrees,
    no_hung_request: (.timed_out == 0),
    every_shopper_answered: (.gave_up == 0),
    some_purchases_accepted: (.accepted_202 > 0),
    died_with_redis_within_bound: (.died_with_redis <= $died_max),
    every_order_was_told: ($d.orders_nobody_was_told <= ($scenario_extra.untold_orders_max // 0)),
    no_state_regression: (.state_regressions == 0),
    no_replay_named_another_reservation: (.replays_named_other == 0)
  } + ($scenario_extra.checks // {}))
| .passed = ([.checks[]] | all)
