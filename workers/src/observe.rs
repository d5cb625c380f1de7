//! How operators watch a worker: Prometheus `/metrics` on its own address
//! and one progress line per interval in the log.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use flashsale::telemetry;
use tokio_util::sync::CancellationToken;

use crate::tally::Tally;

/// Serves `/metrics` until `shutdown`; returns the bound address.
pub async fn serve_metrics(
    address: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let handle = telemetry::metrics_handle();
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            anyhow::anyhow!("cannot listen on FLASHSALE_WORKER_METRICS_ADDR {address}: {error}")
        })?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok(bound)
}

/// Logs what changed since the last line, every `interval`, until `shutdown`.
pub async fn report_progress(tally: Arc<Tally>, interval: Duration, shutdown: CancellationToken) {
    let mut last = tally.totals();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let now = tally.totals();
        if now != last {
            let delta = now.since(last);
            tracing::info!(
                confirmed = delta.confirmed,
                failed = delta.failed,
                retried = delta.retried,
                dead_lettered = delta.dead_lettered,
                batches = delta.batches,
                orders_inserted = delta.orders_inserted,
                orders_per_sec = delta.orders_inserted as f64 / interval.as_secs_f64(),
                "worker progress"
            );
            last = now;
        }
    }
}
