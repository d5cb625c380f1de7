//! The worker's settings: the shared connection settings plus how it
//! consumes, batches, retries and reconciles. Every field is a flag and an
//! environment variable; `flashsale-worker --help` lists them all.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use anyhow::bail;
use clap::{Args, Parser};
use flashsale::config::{
    DatabaseSettings, DependencySettings, LogSettings, QueueSettings, RedisSettings,
    RuntimeSettings,
    parse::{count, millis, secs},
};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "flashsale worker: turns accepted reservations into orders; every flag can also be set by its environment variable"
)]
pub struct WorkerCli {
    #[command(flatten)]
    pub log: LogSettings,
    #[command(flatten)]
    pub runtime: RuntimeSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub redis: RedisSettings,
    #[command(flatten)]
    pub dependencies: DependencySettings,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub worker: WorkerSettings,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// This worker's name in the queue (unique per process; a run number is
    /// appended when the consumer restarts). Defaults to `worker-<pid>`.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_NAME",
        value_name = "FLASHSALE_WORKER_NAME"
    )]
    pub worker_name: Option<String>,

    /// Jobs in flight at once. Must be at least the batch size, or batches
    /// can never fill.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_CONCURRENCY",
        value_name = "FLASHSALE_WORKER_CONCURRENCY",
        default_value = "4096",
        value_parser = count(1..)
    )]
    pub worker_concurrency: usize,

    /// Jobs fetched from the queue per Redis round trip.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_FETCH_BATCH",
        value_name = "FLASHSALE_WORKER_FETCH_BATCH",
        default_value = "1024",
        value_parser = count(1..)
    )]
    pub worker_fetch_batch: usize,

    /// Most orders committed by one PostgreSQL transaction.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_BATCH_SIZE",
        value_name = "FLASHSALE_WORKER_BATCH_SIZE",
        default_value = "1024",
        value_parser = count(1..)
    )]
    pub worker_batch_size: usize,

    /// Longest a job waits for its batch to fill before it is committed anyway.
    #[arg(
        long = "worker-batch-wait-ms",
        env = "FLASHSALE_WORKER_BATCH_WAIT_MS",
        value_name = "FLASHSALE_WORKER_BATCH_WAIT_MS",
        default_value = "5",
        value_parser = millis(..)
    )]
    pub worker_batch_wait: Duration,

    /// How often an idle worker looks for new jobs.
    #[arg(
        long = "worker-poll-ms",
        env = "FLASHSALE_WORKER_POLL_MS",
        value_name = "FLASHSALE_WORKER_POLL_MS",
        default_value = "20",
        value_parser = millis(1..)
    )]
    pub worker_poll: Duration,

    /// How often the worker ends checkout holds: those past their deadline
    /// (expired) and those of cancelled sales (cancelled).
    #[arg(
        long = "hold-sweep-ms",
        env = "FLASHSALE_HOLD_SWEEP_MS",
        value_name = "FLASHSALE_HOLD_SWEEP_MS",
        default_value = "1000",
        value_parser = millis(50..=60_000)
    )]
    pub hold_sweep: Duration,

    /// Attempts before a job is dead-lettered (apalis retries a failed job
    /// after `attempt` seconds; its own cap is ignored, so this one applies).
    #[arg(
        long,
        env = "FLASHSALE_WORKER_MAX_ATTEMPTS",
        value_name = "FLASHSALE_WORKER_MAX_ATTEMPTS",
        default_value = "8",
        value_parser = count(1..)
    )]
    pub worker_max_attempts: usize,

    /// Seconds between the worker's heartbeats in the queue.
    #[arg(
        long = "worker-heartbeat-secs",
        env = "FLASHSALE_WORKER_HEARTBEAT_SECS",
        value_name = "FLASHSALE_WORKER_HEARTBEAT_SECS",
        default_value = "2",
        value_parser = secs(1..)
    )]
    pub worker_heartbeat: Duration,

    /// Missed heartbeats after which a worker's jobs go to other workers.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_MISSED_HEARTBEATS",
        value_name = "FLASHSALE_WORKER_MISSED_HEARTBEATS",
        default_value = "3",
        value_parser = count(1..)
    )]
    pub worker_missed_heartbeats: usize,

    /// Seconds in-flight jobs get to finish after SIGTERM before the worker
    /// exits anyway (unfinished jobs then go to other workers).
    #[arg(
        long = "worker-shutdown-grace-secs",
        env = "FLASHSALE_WORKER_SHUTDOWN_GRACE_SECS",
        value_name = "FLASHSALE_WORKER_SHUTDOWN_GRACE_SECS",
        default_value = "10",
        value_parser = secs(..)
    )]
    pub worker_shutdown_grace: Duration,

    /// Where the worker serves Prometheus `/metrics`.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_METRICS_ADDR",
        value_name = "FLASHSALE_WORKER_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub worker_metrics_addr: SocketAddr,

    /// Seconds between progress log lines.
    #[arg(
        long = "worker-report-secs",
        env = "FLASHSALE_WORKER_REPORT_SECS",
        value_name = "FLASHSALE_WORKER_REPORT_SECS",
        default_value = "10",
        value_parser = secs(1..)
    )]
    pub worker_report: Duration,

    /// When the reconciler runs: a cron expression with seconds.
    #[arg(
        long,
        env = "FLASHSALE_RECONCILE_SCHEDULE",
        value_name = "FLASHSALE_RECONCILE_SCHEDULE",
        default_value = "*/2 * * * * *",
        value_parser = cron_schedule
    )]
    pub reconcile_schedule: cron::Schedule,

    /// Age after which a pending reservation is pushed to the queue again.
    #[arg(
        long = "reconcile-pending-after-secs",
        env = "FLASHSALE_RECONCILE_PENDING_AFTER_SECS",
        value_name = "FLASHSALE_RECONCILE_PENDING_AFTER_SECS",
        default_value = "30",
        value_parser = secs(1..)
    )]
    pub reconcile_pending_after: Duration,

    /// Most reservations of one sale pushed again per reconciler run.
    #[arg(
        long,
        env = "FLASHSALE_RECONCILE_BATCH",
        value_name = "FLASHSALE_RECONCILE_BATCH",
        default_value = "5000",
        value_parser = count(1..)
    )]
    pub reconcile_batch: usize,

    /// Seconds a closed sale keeps its keys in Redis after its last
    /// reservation settled; then its counters are archived in PostgreSQL
    /// and the keys removed (stats, orders and statuses answer from
    /// PostgreSQL).
    #[arg(
        long = "retention-secs",
        env = "FLASHSALE_RETENTION_SECS",
        value_name = "FLASHSALE_RETENTION_SECS",
        default_value = "86400",
        value_parser = secs(..)
    )]
    pub retention: Duration,

    /// Dead purchase jobs kept for inspection; beyond this the surplus is
    /// dropped (their reservations stay pending and the reconciler queues
    /// them again, so nothing is lost).
    #[arg(
        long,
        env = "FLASHSALE_DEAD_JOBS_KEPT",
        value_name = "FLASHSALE_DEAD_JOBS_KEPT",
        default_value = "10000",
        value_parser = count(..)
    )]
    pub dead_jobs_kept: usize,
}

impl WorkerSettings {
    /// What no single value can say (each was checked as it was parsed).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.worker_concurrency < self.worker_batch_size {
            bail!(
                "invalid configuration: FLASHSALE_WORKER_CONCURRENCY ({}) must be at least FLASHSALE_WORKER_BATCH_SIZE ({}), or batches never fill",
                self.worker_concurrency,
                self.worker_batch_size
            );
        }
        Ok(())
    }

    pub fn name(&self) -> String {
        self.worker_name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }
}

/// A cron expression with seconds, e.g. `*/2 * * * * *`.
fn cron_schedule(expression: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(expression).map_err(|error| {
        format!(
            "{expression:?} is not a cron expression with seconds (e.g. \"*/2 * * * * *\"): {error}"
        )
    })
}
