//! An API node: build the pools, arm open sales, serve until shutdown.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::TokenService,
    config::ApiSettings,
    http::{self, AppState},
    store::{arming, postgres::Db, redis::RedisStore},
    telemetry,
};

/// Builds the state from settings. Pools connect lazily: a node starts while
/// a dependency is down and reports not-ready until it is back.
pub fn build_state(settings: &ApiSettings) -> anyhow::Result<AppState> {
    let timeout = settings.dependencies.timeout();
    Ok(AppState {
        db: Db::connect_lazy(&settings.database, timeout)?,
        redis: RedisStore::connect_lazy(&settings.redis, timeout)?,
        tokens: Arc::new(TokenService::new(&settings.auth)),
        admin_emails: settings.auth.normalized_admin_emails().into(),
        metrics: telemetry::metrics_handle(),
        started_at: Instant::now(),
    })
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish within the grace period.
pub async fn serve(
    settings: &ApiSettings,
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    match arming::arm_open_sales(&state.db, &state.redis).await {
        Ok(rebuilt) => tracing::info!(rebuilt, "open sales armed"),
        Err(error) => {
            tracing::warn!(%error, "could not arm open sales at start; readiness will retry")
        }
    }
    let app = http::router(state, &settings.http);
    tracing::info!(%address, "flashsale-api listening");
    let grace = settings.http.shutdown_grace();
    let stopping = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period; exiting");
        }
    }
    tracing::info!("flashsale-api stopped");
    Ok(())
}

/// Binds the configured address and serves.
pub async fn run(settings: ApiSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = build_state(&settings)?;
    let listener = TcpListener::bind(settings.http.bind)
        .await
        .with_context(|| format!("cannot listen on {} (FLASHSALE_BIND)", settings.http.bind))?;
    serve(&settings, state, listener, shutdown).await
}
