//! What the worker has done, for `/metrics` and the periodic progress line.
//! Prometheus gets every figure through the `metrics` facade; the atomics
//! keep the running totals the log line prints.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

#[derive(Debug, Default)]
pub struct Tally {
    confirmed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    orders_inserted: AtomicU64,
}

/// The running totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub confirmed: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    pub orders_inserted: u64,
}

impl Totals {
    /// What happened between `earlier` and these totals.
    pub fn since(self, earlier: Totals) -> Totals {
        Totals {
            confirmed: self.confirmed - earlier.confirmed,
            failed: self.failed - earlier.failed,
            retried: self.retried - earlier.retried,
            dead_lettered: self.dead_lettered - earlier.dead_lettered,
            batches: self.batches - earlier.batches,
            orders_inserted: self.orders_inserted - earlier.orders_inserted,
        }
    }
}

/// How a purchase of a job ended, as seen by the consumer.
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
    /// `purchases` of a job ended this way (a job carries many).
    pub fn record_purchases(&self, end: JobEnd, purchases: u64) {
        let counter = match end {
            JobEnd::Confirmed => &self.confirmed,
            JobEnd::Failed => &self.failed,
            JobEnd::Retried => &self.retried,
            JobEnd::DeadLettered => &self.dead_lettered,
        };
        counter.fetch_add(purchases, Ordering::Relaxed);
        metrics::counter!("worker_purchases_total", "outcome" => end.label()).increment(purchases);
    }

    pub fn record_commit(&self, batch_size: usize, orders_inserted: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.orders_inserted
            .fetch_add(orders_inserted as u64, Ordering::Relaxed);
        metrics::histogram!("worker_batch_size").record(batch_size as f64);
        metrics::histogram!("worker_commit_seconds").record(took.as_secs_f64());
        metrics::counter!("worker_orders_inserted_total").increment(orders_inserted as u64);
    }

    pub fn totals(&self) -> Totals {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            confirmed: load(&self.confirmed),
            failed: load(&self.failed),
            retried: load(&self.retried),
            dead_lettered: load(&self.dead_lettered),
            batches: load(&self.batches),
            orders_inserted: load(&self.orders_inserted),
        }
    }
}
