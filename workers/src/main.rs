//! `flashsale-worker`: turns accepted reservations into orders (the
//! pieces are in the library, [`flashsale_workers`]).
//!
//! On SIGTERM the consumer stops fetching, in-flight jobs finish (their
//! batches flush) or are handed back, fetched-but-unstarted jobs go back to
//! the queue, and the process exits 0 — within the shutdown grace at most.

/// mimalloc instead of glibc's malloc: under a purchase stampede a node's
/// allocations and frees on several threads took a fifth of its CPU in
/// glibc (BENCHMARKS.md, issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use clap::Parser;
use flashsale::{
    jobs::PurchaseQueue,
    shutdown,
    store::{postgres::Db, redis::RedisStore},
    telemetry,
};

use flashsale_workers::{
    batcher::{BatchLimits, Batcher},
    consumer, holds, observe,
    reconciler::{self, Reconciler},
    settings::WorkerCli,
    settle::Settler,
    tally::Tally,
};

/// How long to keep retrying dependencies at start before giving up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    // The fault suite's fail points, from FAILPOINTS (failpoint builds only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = WorkerCli::parse();
    cli.runtime.build()?.block_on(run(cli))
}

async fn run(cli: WorkerCli) -> anyhow::Result<()> {
    telemetry::init_logging(&cli.log)?;
    cli.worker.validate()?;
    let timeout = cli.dependencies.dependency_timeout;
    let db = Db::connect_lazy(&cli.database, timeout)?;
    let redis = RedisStore::connect_lazy(&cli.redis, timeout)?;
    let queue = PurchaseQueue::from_settings(&cli.queue, &cli.redis, timeout)?;
    let shutdown = shutdown::on_signal();
    wait_for_dependencies(&db, &redis).await?;

    let metrics_addr =
        observe::serve_metrics(cli.worker.worker_metrics_addr, shutdown.clone()).await?;
    let tally = Arc::new(Tally::default());
    let settler = Settler::new(db.clone(), redis.clone(), tally.clone());
    let batcher = Batcher::new(
        settler,
        BatchLimits {
            max_size: cli.worker.worker_batch_size,
            max_wait: cli.worker.worker_batch_wait,
        },
    );
    let sweeping = tokio::spawn(holds::run(
        db.clone(),
        redis.clone(),
        cli.worker.hold_sweep,
        shutdown.clone(),
    ));
    let reconciler = Reconciler {
        db,
        redis: redis.clone(),
        queue: queue.clone(),
        pending_after: cli.worker.reconcile_pending_after,
        batch: cli.worker.reconcile_batch,
        retention: cli.worker.retention,
        dead_jobs_kept: cli.worker.dead_jobs_kept,
    };
    tracing::info!(
        worker = %cli.worker.name(),
        %metrics_addr,
        batch_size = cli.worker.worker_batch_size,
        concurrency = cli.worker.worker_concurrency,
        "flashsale-worker started"
    );

    let progress = tokio::spawn(observe::report_progress(
        tally.clone(),
        cli.worker.worker_report,
        shutdown.clone(),
    ));
    let reconciling = tokio::spawn(reconciler::run(
        reconciler,
        cli.worker.name(),
        cli.worker.reconcile_schedule.clone(),
        shutdown.clone(),
    ));
    let promoting = tokio::spawn(consumer::promote_due_jobs(
        queue.clone(),
        cli.worker.worker_poll,
        shutdown.clone(),
    ));
    let consuming = tokio::spawn(consumer::run(
        queue,
        batcher,
        redis,
        tally,
        cli.worker.clone(),
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!("stopping: no new jobs; in-flight batches finish");
    let grace = cli.worker.worker_shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        let _ = tokio::join!(consuming, reconciling, progress, promoting, sweeping);
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "shutdown grace over; unfinished jobs go to other workers after the heartbeat expires"
        );
    }
    tracing::info!("flashsale-worker stopped");
    Ok(())
}

/// Waits for PostgreSQL and Redis, and refuses a schema older than ours.
async fn wait_for_dependencies(db: &Db, redis: &RedisStore) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
    let pending = loop {
        match tokio::try_join!(db.pending_migrations(), redis.ping()) {
            Ok((pending, ())) => break pending,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "dependencies not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => bail!("dependencies unreachable for {STARTUP_DEADLINE:?}: {error}"),
        }
    };
    if !pending.is_empty() {
        bail!("the database is missing migrations {pending:?}; run `flashsale-api migrate` first");
    }
    Ok(())
}
