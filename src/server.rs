//! An API node: build the pools, arm open sales, serve until shutdown.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::TokenService,
    config::ApiSettings,
    http::{self, AppState, rate_limit::UserRateLimiter, routes::stats::StatsCache},
    jobs::PurchaseQueue,
    listener::{self, StallGuardedListener},
    live::LiveEvents,
    snapshot::SaleSnapshot,
    store::{
        arming,
        postgres::Db,
        redis::{EventSubscriber, RedisStore},
    },
    telemetry,
};

/// Builds the state from settings. Pools connect lazily: a node starts while
/// a dependency is down and reports not-ready until it is back.
pub fn build_state(settings: &ApiSettings) -> anyhow::Result<AppState> {
    let timeout = settings.dependencies.timeout();
    let queue = PurchaseQueue::from_settings(&settings.queue, &settings.redis, timeout)?;
    build_state_with(
        settings,
        Db::connect_lazy(&settings.database, timeout)?,
        RedisStore::connect_lazy(&settings.redis, timeout)?,
        queue,
    )
}

/// Builds the state around given connections (tests route them through
/// fault proxies).
pub fn build_state_with(
    settings: &ApiSettings,
    db: Db,
    redis: RedisStore,
    queue: PurchaseQueue,
) -> anyhow::Result<AppState> {
    let purchase = &settings.purchase;
    let (subscriber, inbox) =
        EventSubscriber::connect_lazy(&settings.redis, settings.dependencies.timeout())?;
    let rate = NonZeroU32::new(purchase.user_rate_per_sec)
        .context("FLASHSALE_USER_RATE_PER_SEC must be at least 1")?;
    let burst =
        NonZeroU32::new(purchase.user_burst).context("FLASHSALE_USER_BURST must be at least 1")?;
    Ok(AppState {
        db,
        redis,
        tokens: Arc::new(TokenService::new(&settings.auth)),
        admin_emails: settings.auth.normalized_admin_emails().into(),
        metrics: telemetry::metrics_handle(),
        started_at: Instant::now(),
        queue,
        limiter: Arc::new(UserRateLimiter::new(rate, burst)),
        snapshot: Arc::new(SaleSnapshot::new(purchase.snapshot_refresh())),
        stats: Arc::new(StatsCache::new(purchase.stats_cache())),
        purchase: Arc::new(purchase.clone()),
        live: Arc::new(LiveEvents::new(subscriber, inbox)),
    })
}

/// Forgets idle per-user limiter entries once a minute.
async fn trim_rate_limiter(limiter: Arc<UserRateLimiter>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => limiter.forget_idle(),
        }
    }
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
    tokio::spawn(state.snapshot.clone().run(
        state.db.clone(),
        state.redis.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(
        state
            .live
            .clone()
            .run(state.snapshot.clone(), shutdown.clone()),
    );
    tokio::spawn(trim_rate_limiter(state.limiter.clone(), shutdown.clone()));
    let app = http::router(state, &settings.http);
    tracing::info!(%address, "flashsale-api listening");
    let grace = settings.http.shutdown_grace();
    let stopping = shutdown.clone();
    let listener = StallGuardedListener::new(listener, settings.http.write_stall_timeout());
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
    let listener = listener::bind(settings.http.bind)
        .with_context(|| format!("cannot listen on {} (FLASHSALE_BIND)", settings.http.bind))?;
    serve(&settings, state, listener, shutdown).await
}
