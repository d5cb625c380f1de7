//! What the worker has done, for `/metrics` and the periodic progress line.
//! Prometheus gets every figure through the `metrics` facade; the atomics
//! keep the running totals the log line prints.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

#[derive(Debug, Default)]
pub struct Tally {
    pub confirmed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub orders_inserted: AtomicU64,
}

/// One job's end as seen by the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Confirmed,
    Failed,
    Retried,
    DeadLettered,
}

impl JobEnd {
    fn label(self) -> &'static str {
        match self {
            JobEnd::Confirmed => "confirmed",
            JobEnd::Failed => "failed",
            JobEnd::Retried => "retried",
            JobEnd::DeadLettered => "dead_lettered",
        }
    }
}

impl Tally {
    pub fn record_job(&self, end: JobEnd) {
        let counter = match end {
            JobEnd::Confirmed => &self.confirmed,
            JobEnd::Failed => &self.failed,
            JobEnd::Retried => &self.retried,
            JobEnd::DeadLettered => &self.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("worker_jobs_total", "outcome" => end.label()).increment(1);
    }

    pub fn record_commit(&self, batch_size: usize, orders_inserted: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.orders_inserted
            .fetch_add(orders_inserted as u64, Ordering::Relaxed);
        metrics::histogram!("worker_batch_size").record(batch_size as f64);
        metrics::histogram!("worker_commit_seconds").record(took.as_secs_f64());
        metrics::counter!("worker_orders_inserted_total").increment(orders_inserted as u64);
    }

    /// Totals so far: confirmed, failed, retried, dead-lettered, batches, orders.
    pub fn totals(&self) -> [u64; 6] {
        [
            &self.confirmed,
            &self.failed,
            &self.retried,
            &self.dead_lettered,
            &self.batches,
            &self.orders_inserted,
        ]
        .map(|counter| counter.load(Ordering::Relaxed))
    }
}
