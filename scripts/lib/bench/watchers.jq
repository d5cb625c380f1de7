# scripts/bench's `live` section: what the watching shoppers' streams said
# ($watchers, the report of the load tests' `streams watchers`) against
# what PostgreSQL says ($attempts: the watchers' purchase attempts by user
# id, watchers.sql). Both come in slurped (jq --slurpfile), so each is the
# first element of its array.
def percentile($sorted; $p): if ($sorted | length) == 0 then null
  else $sorted[(($sorted | length) - 1) * $p | floor] end;
def ms_summary($values): ($values | map(. * 1000) | sort) as $sorted
  | {p50: percentile($sorted; 0.5), p99: percentile($sorted; 0.99), max: ($sorted | last)}
  | map_values(if . == null then null else round end);
def shopper_status($outcome): if $outcome == "confirmed" then "confirmed" else "failed" end;

$watchers[0] as $watchers
| $attempts[0] as $attempts
| ($watchers.outcomes | to_entries) as $shoppers
| [$shoppers[] | select($attempts[.key] != null)] as $with_purchase
| [$with_purchase[] | select(.value != null)
   | select(.value.status == shopper_status($attempts[.key].outcome)
            and .value.reservation_id == $attempts[.key].reservation_id)] as $delivered
| {
    streams: $watchers.streams,
    open_seconds: $watchers.open_seconds,
    # After the first, which every stream gets on opening.
    sale_updates_per_stream_per_s:
      (if $watchers.held_seconds > 0
       then (($watchers.sale_events - $watchers.streams) / $watchers.streams / $watchers.held_seconds
             * 100 | round / 100)
       else null end),
    with_purchase: ($with_purchase | length),
    delivered: ($delivered | length),
    missing: ([$with_purchase[] | select(.value == null)] | length),
    # A final event that names the wrong reservation or status, or comes to
    # a shopper PostgreSQL has no purchase for.
    wrong: (($shoppers | map(select(.value != null)) | length) - ($delivered | length)),
    streams_ended_early: $watchers.streams_ended_early,
    stream_errors: $watchers.stream_errors,
    settled_to_stream_ms: ms_summary([$delivered[] | .value.at - $attempts[.key].ended_at]),
    accepted_to_stream_ms: ms_summary([$delivered[] | .value.at - $attempts[.key].reserved_at])
  }
| .passed = (.missing == 0 and .wrong == 0 and .streams_ended_early == 0)
