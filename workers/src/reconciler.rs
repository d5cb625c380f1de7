//! The reconciler, an apalis cron job. Every replica runs it on every tick,
//! so each step is safe to run concurrently:
//! - arm open sales whose Redis state is missing (Redis restarted without
//!   data): stock = allotted - confirmed - surviving pending, never invented;
//! - push pending reservations older than a threshold to the queue again
//!   (their job was lost, its push failed, or it was dead-lettered), when
//!   no job is waiting in the queue (otherwise they are a backlog), in jobs
//!   of at most `MAX_PURCHASES_PER_JOB`. Each push is keyed by sale, time
//!   bucket and chunk, so replicas firing in the same bucket push once (and
//!   a run within the bucket of a job still settling pushes nothing); the commit
//!   path decides each reservation once whatever the number of jobs, and a
//!   reservation whose order already exists is only marked confirmed in
//!   Redis;
//! - end sales whose window passed, and arm closed sales Redis mirrors an
//!   older version of;
//! - give a closed sale's unsold units back to its product once none of its
//!   reservations can still commit (`flashsale::store::closing`);
//! - archive closed sales settled for longer than the retention: their
//!   counters kept in PostgreSQL, their keys removed from Redis;
//! - forget jobs apalis has finished (it keeps them forever otherwise), and
//!   dead jobs beyond the number kept for inspection;
//! - compute each sale's drift, allotted minus (Redis remaining, pending
//!   units and PostgreSQL confirmed), and export it. Drift is reported,
//!   never "fixed": stock is only ever rebuilt from PostgreSQL by arming.

use std::time::Duration;

use apalis_core::{error::BoxDynError, task::data::Data, worker::builder::WorkerBuilder};
use apalis_cron::{CronScheduler, Tick};
use flashsale::{
    app::purchases::purchase_job,
    jobs::{MAX_PURCHASES_PER_JOB, PurchaseQueue, SettlementJob},
    store::{
        StoreError, arming, closing,
        postgres::{Db, SaleRow},
        redis::{Counter, RedisStore},
    },
};
use tokio_util::sync::CancellationToken;

/// Finished jobs forgotten per script call (one short Redis pause each),
/// and calls per run: up to 50,000 jobs per run, well above any drain rate
/// between two runs.
const VACUUM_CHUNK: usize = 1000;
const VACUUM_ROUNDS: usize = 50;

#[derive(Clone)]
pub struct Reconciler {
    pub db: Db,
    pub redis: RedisStore,
    pub queue: PurchaseQueue,
    pub pending_after: Duration,
    pub batch: usize,
    /// How long a settled closed sale keeps its keys in Redis.
    pub retention: Duration,
    /// Dead jobs kept; the surplus is dropped.
    pub dead_jobs_kept: usize,
}

/// What one run did, for the log.
#[derive(Debug, Default)]
struct RunReport {
    sales: usize,
    rebuilt: usize,
    closed_armed: usize,
    allotments_released: usize,
    archived: usize,
    reenqueued: usize,
    vacuumed: u64,
    dead_dropped: u64,
}

impl Reconciler {
    async fn run_once(&self) -> Result<RunReport, StoreError> {
        let mut report = RunReport {
            rebuilt: arming::arm_open_sales(&self.db, &self.redis).await?,
            ..RunReport::default()
        };
        metrics::counter!("reconciler_sales_rebuilt_total").increment(report.rebuilt as u64);
        report.closed_armed = closing::close_in_redis(&self.db, &self.redis).await?;
        report.allotments_released =
            closing::release_drained_allotments(&self.db, &self.redis).await?;
        metrics::counter!("reconciler_allotments_released_total")
            .increment(report.allotments_released as u64);
        report.archived =
            closing::archive_settled_sales(&self.db, &self.redis, self.retention).await?;
        metrics::counter!("reconciler_sales_archived_total").increment(report.archived as u64);
        let depth = self.queue.depth().await?;
        // While jobs wait, an old pending reservation is most likely one of
        // them (a backlog, not a lost job): pushing it again would only add
        // work. Lost jobs are pushed at the first run that finds the queue
        // caught up.
        let caught_up = depth.waiting == 0;
        for sale in self.db.sales_to_reconcile().await? {
            report.sales += 1;
            if caught_up {
                report.reenqueued += self.reenqueue_stale(&sale).await?;
            }
            self.measure_drift(&sale).await?;
        }
        metrics::gauge!("worker_queue_depth", "state" => "waiting").set(depth.waiting as f64);
        metrics::gauge!("worker_queue_depth", "state" => "scheduled").set(depth.scheduled as f64);
        metrics::gauge!("worker_queue_depth", "state" => "dead").set(depth.dead as f64);
        report.vacuumed = self.vacuum_finished_jobs().await?;
        report.dead_dropped = self
            .queue
            .trim_dead(self.dead_jobs_kept, VACUUM_CHUNK)
            .await?;
        metrics::counter!("reconciler_dead_jobs_dropped_total").increment(report.dead_dropped);
        Ok(report)
    }

    /// Forgets finished jobs in chunks, a bounded number per run.
    async fn vacuum_finished_jobs(&self) -> Result<u64, StoreError> {
        let mut vacuumed = 0;
        for _ in 0..VACUUM_ROUNDS {
            let forgotten = self.queue.vacuum_done(VACUUM_CHUNK).await?;
            vacuumed += forgotten;
            if forgotten < VACUUM_CHUNK as u64 {
                break;
            }
        }
        metrics::counter!("reconciler_jobs_vacuumed_total").increment(vacuumed);
        Ok(vacuumed)
    }

    async fn reenqueue_stale(&self, sale: &SaleRow) -> Result<usize, StoreError> {
        let stale = self
            .redis
            .stale_pending(sale.id, self.pending_after, self.batch)
            .await?;
        let bucket =
            chrono::Utc::now().timestamp_millis() / self.pending_after.as_millis().max(1) as i64;
        let count = stale.len();
        let purchases: Vec<_> = stale.into_iter().map(purchase_job).collect();
        for (chunk, purchases) in purchases.chunks(MAX_PURCHASES_PER_JOB).enumerate() {
            let key = format!("{}:reconcile:{bucket}:{chunk}", sale.id);
            let job = SettlementJob {
                sale_id: sale.id,
                purchases: purchases.to_vec(),
            };
            self.queue.enqueue_keyed(job, key).await?;
        }
        if count > 0 {
            tracing::info!(sale_id = %sale.id, count, "stale pending reservations re-enqueued");
            metrics::counter!("reconciler_reenqueued_total").increment(count as u64);
        }
        Ok(count)
    }

    async fn measure_drift(&self, sale: &SaleRow) -> Result<(), StoreError> {
        let counters = self.redis.sale_counters(sale.id).await?;
        let Some(remaining) = counters.remaining else {
            return Ok(()); // not armed (a closed sale): nothing in Redis to compare
        };
        let drift = sale.allotted_quantity
            - remaining
            - counters.get(Counter::PendingUnits)
            - sale.confirmed_quantity;
        let sale_label = sale.id.to_string();
        metrics::gauge!("sale_drift_units", "sale_id" => sale_label.clone()).set(drift as f64);
        metrics::gauge!("sale_pending_reservations", "sale_id" => sale_label)
            .set(counters.pending as f64);
        if drift != 0 {
            tracing::debug!(sale_id = %sale.id, drift, "Redis and PostgreSQL differ (transient while batches commit)");
        }
        self.redis
            .record_drift(sale.id, drift, chrono::Utc::now().timestamp_millis())
            .await
    }
}

async fn reconcile(_tick: Tick, reconciler: Data<Reconciler>) -> Result<(), BoxDynError> {
    match reconciler.run_once().await {
        Ok(report) => {
            tracing::debug!(?report, "reconciler run");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "reconciler run failed; the next tick retries");
            metrics::counter!("reconciler_failures_total").increment(1);
            Err(error.into())
        }
    }
}

/// Runs the reconciler on its schedule until `shutdown`.
pub async fn run(
    reconciler: Reconciler,
    worker_name: String,
    schedule: cron::Schedule,
    shutdown: CancellationToken,
) {
    let worker = WorkerBuilder::new(format!("{worker_name}-reconciler"))
        .backend(CronScheduler::new(schedule))
        .data(reconciler)
        .build(reconcile);
    let result = worker
        .run_with_ctx(crate::stop_when_cancelled(shutdown))
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "reconciler stopped");
    }
}
