//! An API node: build the pools, arm open sales, serve until shutdown.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    app::{Payments, Purchases, Sales, Stats, Waitlist},
    auth::{Authenticator, revocations},
    config::ApiSettings,
    http::{
        self, AppServices, AppState, rate_limit::UserRateLimiter, readiness::ReadinessCache,
        request_metrics::RouteMetrics,
    },
    jobs::{PurchaseQueue, outbox::Outbox},
    latency::{self, LatencyHistogram},
    listener::{self, StallGuardedListener},
    live::LiveEvents,
    snapshot::SaleSnapshot,
    store::{
        arming,
        postgres::Db,
        redis::{EventSubscriber, RedisStore, UserRate},
    },
    telemetry,
};

/// Builds the state from settings. Pools connect lazily: a node starts while
/// a dependency is down and reports not-ready until it is back. Starts the
/// node's settlement outbox, so it runs inside a Tokio runtime.
pub fn build_state(settings: &ApiSettings) -> anyhow::Result<AppState> {
    let timeout = settings.dependencies.dependency_timeout;
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
        EventSubscriber::connect_lazy(&settings.redis, settings.dependencies.dependency_timeout)?;
    let snapshot = Arc::new(SaleSnapshot::new(purchase.snapshot_refresh));
    let sales = Sales::new(
        db.clone(),
        redis.clone(),
        snapshot.clone(),
        settings.payments.hold_min_secs,
    );
    let cluster_rate = UserRate {
        per_second: purchase.user_rate_per_sec.get(),
        burst: purchase.user_burst.get(),
    };
    Ok(AppState::new(AppServices {
        purchases: Arc::new(Purchases::new(
            sales.clone(),
            Outbox::start(queue.clone()),
            cluster_rate,
            purchase.orders_cache_ttl_secs,
        )),
        stats: Arc::new(Stats::new(
            db.clone(),
            redis.clone(),
            queue,
            purchase.stats_cache,
        )),
        payments: Arc::new(Payments::new(db.clone(), redis.clone(), &settings.payments)),
        waitlist: Arc::new(Waitlist::new(sales.clone())),
        sales: Arc::new(sales),
        auth: Arc::new(Authenticator::new(&settings.auth, db.clone())?),
        readiness: Arc::new(ReadinessCache::new(settings.operator.ready_cache)),
        db,
        redis,
        metrics: telemetry::metrics_handle(),
        route_metrics: RouteMetrics::default(),
        started_at: Instant::now(),
        limiter: Arc::new(UserRateLimiter::new(
            purchase.user_rate_per_sec,
            purchase.user_burst,
        )),
        snapshot,
        live: Arc::new(LiveEvents::new(subscriber, inbox)),
        purchase_latency: Arc::default(),
    }))
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

/// Publishes this node's purchase latency counts for the operators' stats
/// (`crate::latency`); a failed publish is retried with the next.
async fn publish_latency(
    redis: RedisStore,
    histogram: Arc<LatencyHistogram>,
    shutdown: CancellationToken,
) {
    let node = Uuid::now_v7();
    let mut ticker = tokio::time::interval(latency::PUBLISH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                let counts = histogram.snapshot();
                if let Err(error) = redis.publish_latency(node, &counts).await {
                    tracing::debug!(%error, "purchase latency not published; the next tick retries");
                }
            }
        }
    }
}

/// Serves the API on `listener` and the operator endpoints on
/// `operator_listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish within the grace period.
pub async fn serve(
    settings: &ApiSettings,
    state: AppState,
    listener: TcpListener,
    operator_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    let operator_address: SocketAddr = operator_listener.local_addr()?;
    spawn_identity_loops(settings, &state, &shutdown)?;
    match arming::arm_open_sales(&state.db, &state.redis).await {
        Ok(rebuilt) => tracing::info!(rebuilt, "open sales armed"),
        Err(error) => {
            tracing::warn!(%error, "could not arm open sales at start; readiness will retry")
        }
    }
    // The first requests find the open sales (a 202's hold terms come
    // from here); the loop below keeps them fresh.
    if let Err(error) = state.snapshot.load(&state.db, &state.redis).await {
        tracing::warn!(%error, "open sales not loaded before serving; the snapshot loop retries");
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
    tokio::spawn(publish_latency(
        state.redis.clone(),
        state.purchase_latency.clone(),
        shutdown.clone(),
    ));
    let operator_app = http::operator_router(state.clone(), &settings.http);
    tokio::spawn(
        axum::serve(operator_listener, operator_app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let purchases = state.purchases.clone();
    let app = http::router(state, &settings.http);
    tracing::info!(%address, %operator_address, "flashsale-api listening (operator endpoints on the second address)");
    let grace = settings.http.shutdown_grace;
    let stopping = shutdown.clone();
    let listener = StallGuardedListener::new(listener, settings.http.write_stall_timeout);
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    let served = tokio::select! {
        result = server => result.context("HTTP server failed"),
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period; exiting");
            Ok(())
        }
    };
    // Whatever ended the server, the purchases it accepted are pushed.
    purchases
        .close_outbox(settings.dependencies.dependency_timeout)
        .await;
    tracing::info!("flashsale-api stopped");
    served
}

/// Keeps this node's view of identities current: revoked accounts (loaded
/// from PostgreSQL, pushed over the accounts channel) and, in `oidc` mode,
/// the provider's keys.
fn spawn_identity_loops(
    settings: &ApiSettings,
    state: &AppState,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (accounts, inbox) =
        EventSubscriber::connect_lazy(&settings.redis, settings.dependencies.dependency_timeout)?;
    tokio::spawn(revocations::watch(
        state.auth.revocations().clone(),
        state.db.clone(),
        accounts,
        inbox,
        shutdown.clone(),
    ));
    if let Some(keys) = state.auth.provider_keys().cloned() {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { keys.run(shutdown).await });
    }
    Ok(())
}

/// Binds the configured addresses and serves.
pub async fn run(settings: ApiSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = build_state(&settings)?;
    let listener = listener::bind(settings.http.bind)
        .with_context(|| format!("cannot listen on {} (FLASHSALE_BIND)", settings.http.bind))?;
    let operator = settings.operator.operator_bind;
    let operator_listener = TcpListener::bind(operator)
        .await
        .with_context(|| format!("cannot listen on {operator} (FLASHSALE_OPERATOR_BIND)"))?;
    serve(&settings, state, listener, operator_listener, shutdown).await
}
