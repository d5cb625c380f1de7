//! The worker's settings: the shared connection settings plus how it
//! consumes, batches, retries and reconciles. Every field is a flag and an
//! environment variable; `flashsale-worker --help` lists them all.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use anyhow::bail;
use clap::{Args, Parser};
use flashsale::config::{
    DatabaseSettings, DependencySettings, LogSettings, QueueSettings, RedisSettings,
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
        default_value_t = 4096
    )]
    pub worker_concurrency: usize,

    /// Jobs fetched from the queue per Redis round trip.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_FETCH_BATCH",
        value_name = "FLASHSALE_WORKER_FETCH_BATCH",
        default_value_t = 1024
    )]
    pub worker_fetch_batch: usize,

    /// Most orders committed by one PostgreSQL transaction.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_BATCH_SIZE",
        value_name = "FLASHSALE_WORKER_BATCH_SIZE",
        default_value_t = 1024
    )]
    pub worker_batch_size: usize,

    /// Longest a job waits for its batch to fill before it is committed anyway.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_BATCH_WAIT_MS",
        value_name = "FLASHSALE_WORKER_BATCH_WAIT_MS",
        default_value_t = 5
    )]
    pub worker_batch_wait_ms: u64,

    /// How often an idle worker looks for new jobs.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_POLL_MS",
        value_name = "FLASHSALE_WORKER_POLL_MS",
        default_value_t = 20
    )]
    pub worker_poll_ms: u64,

    /// Attempts before a job is dead-lettered (apalis retries a failed job
    /// after `attempt` seconds; its own cap is ignored, so this one applies).
    #[arg(
        long,
        env = "FLASHSALE_WORKER_MAX_ATTEMPTS",
        value_name = "FLASHSALE_WORKER_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub worker_max_attempts: usize,

    /// Seconds between the worker's heartbeats in the queue.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_HEARTBEAT_SECS",
        value_name = "FLASHSALE_WORKER_HEARTBEAT_SECS",
        default_value_t = 2
    )]
    pub worker_heartbeat_secs: u64,

    /// Missed heartbeats after which a worker's jobs go to other workers.
    #[arg(
        long,
        env = "FLASHSALE_WORKER_MISSED_HEARTBEATS",
        value_name = "FLASHSALE_WORKER_MISSED_HEARTBEATS",
        default_value_t = 3
    )]
    pub worker_missed_heartbeats: usize,

    /// Seconds in-flight jobs get to finish after SIGTERM before the worker
    /// exits anyway (unfinished jobs then go to other workers).
    #[arg(
        long,
        env = "FLASHSALE_WORKER_SHUTDOWN_GRACE_SECS",
        value_name = "FLASHSALE_WORKER_SHUTDOWN_GRACE_SECS",
        default_value_t = 10
    )]
    pub worker_shutdown_grace_secs: u64,

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
        long,
        env = "FLASHSALE_WORKER_REPORT_SECS",
        value_name = "FLASHSALE_WORKER_REPORT_SECS",
        default_value_t = 10
    )]
    pub worker_report_secs: u64,

    /// When the reconciler runs: a cron expression with seconds.
    #[arg(
        long,
        env = "FLASHSALE_RECONCILE_SCHEDULE",
        value_name = "FLASHSALE_RECONCILE_SCHEDULE",
        default_value = "*/2 * * * * *"
    )]
    pub reconcile_schedule: String,

    /// Age after which a pending reservation is pushed to the queue again.
    #[arg(
        long,
        env = "FLASHSALE_RECONCILE_PENDING_AFTER_SECS",
        value_name = "FLASHSALE_RECONCILE_PENDING_AFTER_SECS",
        default_value_t = 30
    )]
    pub reconcile_pending_after_secs: u64,

    /// Most reservations of one sale pushed again per reconciler run.
    #[arg(
        long,
        env = "FLASHSALE_RECONCILE_BATCH",
        value_name = "FLASHSALE_RECONCILE_BATCH",
        default_value_t = 5000
    )]
    pub reconcile_batch: usize,

    /// Seconds a closed sale keeps its keys in Redis after its last
    /// reservation settled; then its counters are archived in PostgreSQL
    /// and the keys removed (stats, orders and statuses answer from
    /// PostgreSQL).
    #[arg(
        long,
        env = "FLASHSALE_RETENTION_SECS",
        value_name = "FLASHSALE_RETENTION_SECS",
        default_value_t = 86_400
    )]
    pub retention_secs: u64,

    /// Dead purchase jobs kept for inspection; beyond this the surplus is
    /// dropped (their reservations stay pending and the reconciler queues
    /// them again, so nothing is lost).
    #[arg(
        long,
        env = "FLASHSALE_DEAD_JOBS_KEPT",
        value_name = "FLASHSALE_DEAD_JOBS_KEPT",
        default_value_t = 10_000
    )]
    pub dead_jobs_kept: usize,
}

impl WorkerSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            (
                "FLASHSALE_WORKER_CONCURRENCY",
                self.worker_concurrency as u64,
            ),
            (
                "FLASHSALE_WORKER_FETCH_BATCH",
                self.worker_fetch_batch as u64,
            ),
            ("FLASHSALE_WORKER_BATCH_SIZE", self.worker_batch_size as u64),
            ("FLASHSALE_WORKER_POLL_MS", self.worker_poll_ms),
            (
                "FLASHSALE_WORKER_MAX_ATTEMPTS",
                self.worker_max_attempts as u64,
            ),
            (
                "FLASHSALE_WORKER_HEARTBEAT_SECS",
                self.worker_heartbeat_secs,
            ),
            (
                "FLASHSALE_WORKER_MISSED_HEARTBEATS",
                self.worker_missed_heartbeats as u64,
            ),
            ("FLASHSALE_WORKER_REPORT_SECS", self.worker_report_secs),
            (
                "FLASHSALE_RECONCILE_PENDING_AFTER_SECS",
                self.reconcile_pending_after_secs,
            ),
            ("FLASHSALE_RECONCILE_BATCH", self.reconcile_batch as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("invalid configuration: {name} must be at least 1");
            }
        }
        if self.worker_concurrency < self.worker_batch_size {
            bail!(
                "invalid configuration: FLASHSALE_WORKER_CONCURRENCY ({}) must be at least FLASHSALE_WORKER_BATCH_SIZE ({}), or batches never fill",
                self.worker_concurrency,
                self.worker_batch_size
            );
        }
        if let Err(error) = cron::Schedule::from_str(&self.reconcile_schedule) {
            bail!(
                "invalid configuration: FLASHSALE_RECONCILE_SCHEDULE {:?} is not a cron expression with seconds (e.g. \"*/2 * * * * *\"): {error}",
                self.reconcile_schedule
            );
        }
        Ok(())
    }

    pub fn name(&self) -> String {
        self.worker_name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }

    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.worker_batch_wait_ms)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.worker_poll_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.worker_heartbeat_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.worker_shutdown_grace_secs)
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.worker_report_secs)
    }

    pub fn pending_after(&self) -> Duration {
        Duration::from_secs(self.reconcile_pending_after_secs)
    }

    pub fn schedule(&self) -> cron::Schedule {
        cron::Schedule::from_str(&self.reconcile_schedule).expect("validate() checked the schedule")
    }
}
