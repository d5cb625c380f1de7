//! The purchase-queue consumer: an apalis worker whose handler hands each
//! purchase of a settlement job (one API node's few milliseconds of one
//! sale) to the group-commit [`Batcher`] and waits for their batches. apalis
//! acks a job only when the handler returns, so nothing is acked before its
//! orders are durable. A failed batch fails the jobs it held back to the
//! queue, where apalis retries each after `attempt` seconds (the purchases
//! that did settle are found settled on the retry); past our own attempt cap
//! the job is dead-lettered (apalis ignores its per-task cap) and its still
//! pending reservations are left to the reconciler.
//!
//! apalis 1.0 pushes every job into its scheduled set and promotes all due
//! jobs with one Lua `unpack`, which fails past ~8000: [`promote_due_jobs`]
//! moves them in chunks beside the consumer so that never happens.
//!
//! apalis stops a worker on the first backend error (Redis gone); the
//! supervisor loop here starts a fresh one under a new name, and the jobs
//! the old one held are handed out again once its heartbeat expires.

use std::{sync::Arc, time::Duration};

use apalis_core::{
    backend::ext::BackendExt,
    error::{AbortError, BoxDynError},
    task::{attempt::Attempt, data::Data},
    worker::builder::WorkerBuilder,
};
use flashsale::{
    jobs::{PurchaseQueue, SettlementJob},
    store::redis::RedisStore,
};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;

use crate::{
    batcher::Batcher,
    settings::WorkerSettings,
    settle::JobOutcome,
    tally::{JobEnd, Tally},
};

/// Pause before a consumer that died of a backend error starts again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Chunks of due jobs promoted per tick of [`promote_due_jobs`] at most
/// (20,000 jobs a tick, every poll interval: far above any push rate),
/// each its own short script call.
const PROMOTE_CALLS_PER_TICK: usize = 20;

/// What every job handler shares.
#[derive(Clone)]
struct HandlerContext {
    batcher: Batcher,
    redis: RedisStore,
    tally: Arc<Tally>,
    max_attempts: usize,
}

/// Consumes until `shutdown`, restarting after backend failures.
pub async fn run(
    queue: PurchaseQueue,
    batcher: Batcher,
    redis: RedisStore,
    tally: Arc<Tally>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) {
    let context = HandlerContext {
        batcher,
        redis,
        tally,
        max_attempts: settings.worker_max_attempts,
    };
    let base_name = settings.name();
    for run in 1.. {
        let name = format!("{base_name}-{run}");
        // A backlog apalis's own fetch would choke on is moved first.
        if let Err(error) = queue.promote_due(usize::MAX).await {
            tracing::warn!(%error, "cannot promote due jobs before starting the consumer");
        }
        let storage = queue
            .consumer(
                settings.worker_fetch_batch,
                settings.worker_heartbeat,
                settings.worker_missed_heartbeats,
            )
            .poll_with_interval(settings.worker_poll);
        let worker = WorkerBuilder::new(name.clone())
            .backend(storage)
            .layer(ConcurrencyLimitLayer::new(settings.worker_concurrency))
            .data(context.clone())
            .build(handle_settlement);
        tracing::info!(worker = %name, "purchase consumer started");
        let result = worker
            .run_with_ctx(crate::stop_when_cancelled(shutdown.clone()))
            .await;
        match result {
            Ok(()) if shutdown.is_cancelled() => break,
            Ok(()) => tracing::warn!(worker = %name, "purchase consumer ended; restarting"),
            Err(error) => {
                tracing::error!(worker = %name, %error, "purchase consumer failed; restarting")
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(RESTART_DELAY) => {}
            () = shutdown.cancelled() => break,
        }
    }
    tracing::info!("purchase consumer stopped");
}

/// Keeps apalis's scheduled set small by promoting due jobs every
/// `interval`, independently of the consumer (which stops fetching while its
/// concurrency is saturated, exactly when a backlog builds up).
pub async fn promote_due_jobs(
    queue: PurchaseQueue,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match queue.promote_due(PROMOTE_CALLS_PER_TICK).await {
            Ok(_) if failing => {
                tracing::info!("promoting due jobs works again");
                failing = false;
            }
            Ok(_) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot promote due jobs; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn handle_settlement(
    job: SettlementJob,
    context: Data<HandlerContext>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let sale_id = job.sale_id;
    let submitted = job.purchases.into_iter().map(|purchase| {
        let batcher = &context.batcher;
        async move {
            let reservation_id = purchase.reservation_id;
            (reservation_id, batcher.submit(purchase).await)
        }
    });
    let mut unsettled = 0;
    let mut last_error = None;
    for (reservation_id, outcome) in join_all(submitted).await {
        match outcome {
            Ok(JobOutcome::Confirmed) => context.tally.record_purchases(JobEnd::Confirmed, 1),
            Ok(JobOutcome::Failed(reason)) => {
                tracing::info!(%reservation_id, %sale_id, reason = reason.code(), "purchase failed for good; reservation released");
                context.tally.record_purchases(JobEnd::Failed, 1);
            }
            Err(error) => {
                unsettled += 1;
                last_error = Some(error);
            }
        }
    }
    let Some(error) = last_error else {
        return Ok(());
    };
    if attempt.current() >= context.max_attempts {
        tracing::error!(%sale_id, unsettled, attempt = attempt.current(), %error,
            "settlement job dead-lettered; the reconciler re-enqueues its pending reservations later");
        context
            .tally
            .record_purchases(JobEnd::DeadLettered, unsettled);
        if let Err(count_error) = context.redis.count_dead_letter(sale_id, unsettled).await {
            tracing::warn!(%sale_id, error = %count_error, "cannot count the dead letter");
        }
        return Err(AbortError::new(error.to_string()).into());
    }
    tracing::warn!(%sale_id, unsettled, attempt = attempt.current(), %error,
        "settlement batch failed; the job will be retried");
    context.tally.record_purchases(JobEnd::Retried, unsettled);
    Err(error.to_string().into())
}
