//! Probes for operators and orchestrators: liveness (the process answers),
//! readiness (PostgreSQL and Redis answer, tokens can be judged, open sales
//! are armed), and a detailed health document. Liveness and readiness are
//! public (load balancers probe them through nginx; readiness is cached, so
//! a flood costs one check per period); the detailed document is served on
//! the operator listener only ([`operator_router`]).

use std::time::Instant;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::error_code::error_responses,
    http::{ApiError, AppState, ErrorCode},
    store::{Dependency, StoreError},
};

/// The public probes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_live))
        .routes(routes!(get_ready))
}

/// The probes and the per-dependency report, for the operator listener.
pub fn operator_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/health/live", axum::routing::get(get_live))
        .route("/api/health/ready", axum::routing::get(get_ready))
        .route("/api/health", axum::routing::get(get_health))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    #[schema(example = "ready")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` when every dependency answers, else `degraded`.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub postgres: DependencyHealth,
    pub redis: DependencyHealth,
    /// `dev` or `oidc`.
    pub auth_mode: &'static str,
    /// Whether this node can judge tokens now (revocations loaded; in
    /// `oidc` mode the provider's keys fetched within their bound).
    pub tokens_checkable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyHealth {
    /// `up` or `down`.
    #[schema(example = "up")]
    pub status: &'static str,
    /// Round-trip time of the check.
    pub latency_ms: f64,
    /// Why it is down, in words safe to show; details are in the logs.
    pub problem: Option<&'static str>,
}

/// The process is up and serving HTTP. Touches no dependency.
#[utoipa::path(get, path = "/api/health/live", tag = "operations",
    responses((status = 200, description = "The process answers", body = LiveResponse)))]
async fn get_live() -> Json<LiveResponse> {
    Json(LiveResponse { status: "ok" })
}

error_responses!(ReadyErrors: [] Unavailable);

/// Ready to take traffic: PostgreSQL and Redis answer within the dependency
/// timeout and the node can judge tokens. Open sales missing in Redis are
/// armed from PostgreSQL in the background (one sweep at a time per node;
/// a purchase that finds its sale missing arms it too). The verdict is
/// reused for `FLASHSALE_READY_CACHE_MS`.
#[utoipa::path(get, path = "/api/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        ReadyErrors,
    ))]
async fn get_ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    state.readiness.verdict(check_ready(&state)).await?;
    Ok(Json(ReadyResponse { status: "ready" }))
}

async fn check_ready(state: &AppState) -> Result<(), ApiError> {
    metrics::counter!("flashsale_readiness_checks_total").increment(1);
    let (postgres, redis) = tokio::join!(state.db.ping(), state.redis.ping());
    postgres?;
    redis?;
    if !state.auth.is_ready() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this node cannot judge tokens yet (revoked accounts not loaded, or the identity \
             provider's keys not fetched); retry in 1 s",
        ));
    }
    state.sales.arm_missing_in_background();
    Ok(())
}

/// Each dependency's state and latency (operator listener only). Always
/// 200: this is a report, the readiness probe is the verdict.
async fn get_health(State(state): State<AppState>) -> Json<HealthResponse> {
    let (postgres, redis) = tokio::join!(
        timed(Dependency::Postgres, state.db.ping()),
        timed(Dependency::Redis, state.redis.ping())
    );
    let status = if postgres.status == "up" && redis.status == "up" {
        "ok"
    } else {
        "degraded"
    };
    Json(HealthResponse {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started_at.elapsed().as_secs(),
        postgres,
        redis,
        auth_mode: state.auth.mode().as_str(),
        tokens_checkable: state.auth.is_ready(),
    })
}

async fn timed(
    dependency: Dependency,
    check: impl Future<Output = Result<(), StoreError>>,
) -> DependencyHealth {
    let started = Instant::now();
    let result = check.await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let problem = match result {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(%dependency, %error, "health check failed");
            Some(match error {
                StoreError::Unavailable { .. } => "unreachable or too slow",
                _ => "unexpected error (see the node's logs)",
            })
        }
    };
    DependencyHealth {
        status: if problem.is_none() { "up" } else { "down" },
        latency_ms,
        problem,
    }
}
