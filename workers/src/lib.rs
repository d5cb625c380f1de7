//! The worker's parts, as a library so that tests and benches reach them
//! without a process (`main.rs` wires them into `flashsale-worker`).
//!
//! - [`consumer`]: the apalis consumer of the purchase queue;
//! - [`batcher`]: group commit, one lane per sale;
//! - [`settle`]: one batch through PostgreSQL, then Redis;
//! - [`reconciler`]: the apalis cron job that re-arms, re-enqueues and
//!   measures drift;
//! - [`holds`]: the sweep that ends checkout holds (expired, or of a
//!   cancelled sale);
//! - [`observe`] and [`tally`]: `/metrics` and the progress log;
//! - [`settings`]: the configuration.

pub mod batcher;
pub mod consumer;
mod failpoint;
pub mod holds;
pub mod observe;
pub mod reconciler;
pub mod settings;
pub mod settle;
pub mod tally;

use apalis_core::{error::WorkerError, worker::context::WorkerContext};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// What an apalis worker runs beside its work: stop once `shutdown` fires
/// (apalis then finishes in-flight jobs and hands fetched ones back).
fn stop_when_cancelled(
    shutdown: CancellationToken,
) -> impl FnMut(WorkerContext) -> BoxFuture<'static, Result<(), WorkerError>> + Send + 'static {
    move |worker| {
        let stop = shutdown.clone();
        Box::pin(async move {
            stop.cancelled().await;
            worker.stop()
        })
    }
}
