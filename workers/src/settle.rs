//! Settling one batch of one sale: PostgreSQL decides and commits (group
//! commit, see `flashsale::store::postgres::settlement`), then Redis is told —
//! reservations confirmed or released, the buyers' order caches dropped,
//! the sale's events published. Nothing is reported done before its order is
//! durable; if a Redis step fails the whole batch fails back to the queue,
//! and the redelivery finds the orders already there and only repeats the
//! Redis steps (every step is idempotent).

use std::{sync::Arc, time::Instant};

use flashsale::{
    domain::{Decision, FailureReason, ReservationStatus},
    jobs::PurchaseJob,
    store::{
        StoreError,
        postgres::{Db, ReservationToSettle},
        redis::{RedisStore, Restock},
    },
};
use futures::future::try_join_all;
use uuid::Uuid;

use crate::{failpoint, tally::Tally};

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Its order is committed (now or by an earlier delivery).
    Confirmed,
    /// It can never become an order; the reservation was released with this
    /// reason, which the shopper sees.
    Failed(FailureReason),
}

#[derive(Clone)]
pub struct Settler {
    db: Db,
    redis: RedisStore,
    tally: Arc<Tally>,
}

impl Settler {
    pub fn new(db: Db, redis: RedisStore, tally: Arc<Tally>) -> Self {
        Self { db, redis, tally }
    }

    /// Settles jobs of one sale, each reservation at most once in `jobs`.
    /// Returns one outcome per job, in order.
    pub async fn settle(
        &self,
        sale_id: Uuid,
        jobs: &[PurchaseJob],
    ) -> Result<Vec<JobOutcome>, StoreError> {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&index| (jobs[index].reserved_at_ms, jobs[index].reservation_id));
        let batch: Vec<ReservationToSettle> =
            order.iter().map(|&index| (&jobs[index]).into()).collect();

        let started = Instant::now();
        let settled = self.db.settle_batch(sale_id, &batch).await?;
        self.tally
            .record_commit(batch.len(), settled.orders_inserted, started.elapsed());
        failpoint::after_commit(settled.orders_inserted);

        let mut confirmed = Vec::new();
        let mut buyers = Vec::new();
        let mut releases = Vec::new();
        let mut outcomes = vec![JobOutcome::Confirmed; jobs.len()];
        for ((&index, decision), &order_id) in
            order.iter().zip(&settled.decisions).zip(&settled.order_ids)
        {
            let job = &jobs[index];
            let (status, reason, restock) = match decision {
                Decision::Commit => {
                    confirmed.push((job.reservation_id, order_id));
                    buyers.push(job.user_id);
                    continue;
                }
                Decision::AlreadyConfirmed => {
                    confirmed.push((job.reservation_id, order_id));
                    continue;
                }
                // Units that did not fit go back only as far as the room
                // PostgreSQL has left beyond what Redis still promises.
                Decision::Fail {
                    reason: reason @ FailureReason::NoStock,
                    restock,
                } => (
                    ReservationStatus::Failed,
                    Some(*reason),
                    Restock {
                        units: *restock,
                        within_room: Some(settled.room_left),
                    },
                ),
                Decision::Fail { reason, restock } => (
                    ReservationStatus::Failed,
                    Some(*reason),
                    Restock::all(*restock),
                ),
                // Released again after a crash between the commit and
                // Redis: the units go back only when they surely exist.
                Decision::AlreadyEnded { status, reason } => {
                    let restock = match reason {
                        Some(reason) if reason.units_exist() => job.quantity.units(),
                        _ => 0,
                    };
                    (*status, *reason, Restock::all(restock))
                }
            };
            let reason = reason.unwrap_or(FailureReason::NoStock);
            releases.push(Release {
                reservation_id: job.reservation_id,
                status,
                reason,
                restock,
            });
            outcomes[index] = JobOutcome::Failed(reason);
        }

        let committed_after = started.elapsed();
        self.redis.confirm(sale_id, &confirmed).await?;
        try_join_all(releases.iter().map(|release| {
            self.redis.release(
                sale_id,
                release.reservation_id,
                release.status,
                release.reason,
                release.restock,
            )
        }))
        .await?;
        buyers.sort_unstable();
        buyers.dedup();
        self.redis.invalidate_orders_of(&buyers).await?;
        tracing::debug!(
            %sale_id,
            size = jobs.len(),
            commit_ms = committed_after.as_secs_f64() * 1e3,
            settled_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch settled"
        );
        Ok(outcomes)
    }
}

/// A reservation PostgreSQL failed, to release in Redis.
struct Release {
    reservation_id: Uuid,
    status: ReservationStatus,
    reason: FailureReason,
    /// Units that go back on sale; the rest are written off.
    restock: Restock,
}
