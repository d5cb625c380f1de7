//! The sweep of checkout holds: every interval, the holds of cancelled
//! sales end `cancelled` and those past their deadline `expired`
//! (PostgreSQL under the product's lock, then Redis,
//! `flashsale::store::holds`), and what earlier ends still owe Redis is
//! returned. Every worker runs one; sweeps of several workers meet at
//! the product's lock and only change holds still awaiting payment, so a
//! hold ends once however many sweep it.

use std::time::Duration;

use flashsale::store::{
    holds::{self, SweepBatch},
    postgres::Db,
    redis::RedisStore,
};
use tokio_util::sync::CancellationToken;

/// Sweeps until `shutdown`; a failed step is logged and the next sweep
/// retries (nothing a sweep half did is lost: PostgreSQL records what
/// Redis is still owed).
pub async fn run(db: Db, redis: RedisStore, every: Duration, shutdown: CancellationToken) {
    let mut batch = SweepBatch::default();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let swept = holds::sweep(&db, &redis, &mut batch).await;
        if swept.expired > 0 || swept.cancelled_with_sale > 0 || swept.returned > 0 {
            tracing::info!(
                expired = swept.expired,
                cancelled_with_sale = swept.cancelled_with_sale,
                returned = swept.returned,
                "holds swept"
            );
        }
        metrics::counter!("holds_ended_total", "how" => "expired").increment(swept.expired as u64);
        metrics::counter!("holds_ended_total", "how" => "sale_cancelled")
            .increment(swept.cancelled_with_sale as u64);
        metrics::counter!("holds_units_returned_total").increment(swept.returned as u64);
        metrics::counter!("hold_sweep_failures_total").increment(swept.failures as u64);
    }
}
