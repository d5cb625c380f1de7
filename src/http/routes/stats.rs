//! Operators: a sale's numbers, from Redis counters plus PostgreSQL, cached
//! on each node for a couple of seconds so a dashboard cannot load the stores.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::{DomainError, SaleState},
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Admin, PathParams, QueryParams},
    },
    store::redis::{Counter, SaleCounters},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_current_sale_stats))
        .routes(routes!(get_sale_stats))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SaleStatsResponse {
    pub sale_id: Uuid,
    pub state: SaleState,
    /// Units allotted to the sale.
    pub allotted: i64,
    /// Units left to reserve (Redis).
    pub remaining: Option<i64>,
    /// Purchase attempts that reached Redis (after each node's own rate
    /// limit): accepted + replayed + rejected.
    pub attempts: i64,
    /// Reservations accepted.
    pub accepted: i64,
    /// Repeated requests answered from their idempotency record.
    pub replayed: i64,
    pub rejected: RejectedCounts,
    /// Reservations waiting to become orders.
    pub pending: i64,
    /// Units committed as orders in PostgreSQL.
    pub confirmed_units: i64,
    /// Reservations released, expired or failed.
    pub released: i64,
    /// Of those, reservations that could never become an order (the
    /// shopper's status says why).
    pub failed: i64,
    /// Units dropped from Redis stock because PostgreSQL had no unit for
    /// them (Redis had counted too many).
    pub units_written_off: i64,
    /// Purchase jobs given up on after too many attempts; their
    /// reservations stay pending and the reconciler queues them again.
    pub dead_lettered: i64,
    /// Milliseconds the oldest pending reservation has waited for its order.
    pub drain_lag_ms: Option<i64>,
    /// Allotted minus (Redis remaining, pending units and PostgreSQL
    /// confirmed) at the reconciler's last run: 0 when Redis and PostgreSQL
    /// agree; briefly non-zero while batches commit.
    pub drift: Option<i64>,
    pub drift_checked_at: Option<DateTime<Utc>>,
    pub queue: QueueCounts,
    pub computed_at: DateTime<Utc>,
}

/// The purchase queue (all sales).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueCounts {
    /// Jobs waiting for a worker.
    pub waiting: u64,
    /// Failed attempts waiting for their retry.
    pub scheduled: u64,
    /// Jobs in the queue's dead set.
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedCounts {
    pub sold_out: i64,
    pub already_purchased: i64,
    pub above_limit: i64,
    pub not_active: i64,
    pub idempotency_key_reused: i64,
    /// Over the per-user attempt limit of the whole cluster (attempts a
    /// node's own limiter refused never reach Redis and are not here).
    pub rate_limited: i64,
}

impl RejectedCounts {
    fn total(&self) -> i64 {
        self.sold_out
            + self.already_purchased
            + self.above_limit
            + self.not_active
            + self.idempotency_key_reused
            + self.rate_limited
    }
}

/// Stats computed recently on this node, per sale.
pub struct StatsCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (Instant, SaleStatsResponse)>>,
}

impl StatsCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn get(&self, sale_id: Uuid) -> Option<SaleStatsResponse> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(&sale_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, stats)| stats.clone())
    }

    fn put(&self, stats: SaleStatsResponse) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(stats.sale_id, (Instant::now(), stats));
    }
}

async fn stats_for(state: &AppState, sale_id: Uuid) -> Result<SaleStatsResponse, ApiError> {
    if let Some(cached) = state.stats.get(sale_id) {
        return Ok(cached);
    }
    let (sale, counters, queue) = tokio::try_join!(
        state.db.find_sale(sale_id),
        state.redis.sale_counters(sale_id),
        state.queue.depth()
    )?;
    let sale = sale.ok_or(DomainError::SaleNotFound(sale_id))?;
    // An archived sale's keys left Redis; its counters were kept first.
    let counters = match &sale.archived_counters {
        Some(archived) if counters.counters.is_empty() => SaleCounters {
            counters: archived.0.clone(),
            ..SaleCounters::default()
        },
        _ => counters,
    };
    let now = Utc::now();
    let rejected = RejectedCounts {
        sold_out: counters.get(Counter::RejectedSoldOut),
        already_purchased: counters.get(Counter::RejectedLimit),
        above_limit: counters.get(Counter::RejectedAboveLimit),
        not_active: counters.get(Counter::RejectedNotActive),
        idempotency_key_reused: counters.get(Counter::RejectedKeyReused),
        rate_limited: counters.get(Counter::RejectedRateLimited),
    };
    let stats = SaleStatsResponse {
        sale_id,
        state: sale.effective_state(now),
        allotted: sale.allotted_quantity,
        remaining: counters.remaining,
        attempts: counters.get(Counter::Accepted)
            + counters.get(Counter::Replayed)
            + rejected.total(),
        accepted: counters.get(Counter::Accepted),
        replayed: counters.get(Counter::Replayed),
        rejected,
        pending: counters.pending,
        confirmed_units: sale.confirmed_quantity,
        released: counters.get(Counter::Released)
            + counters.get(Counter::Expired)
            + counters.get(Counter::Failed),
        failed: counters.get(Counter::Failed),
        units_written_off: counters.get(Counter::UnitsWrittenOff),
        dead_lettered: counters.get(Counter::DeadLettered),
        drain_lag_ms: counters
            .oldest_pending_ms
            .map(|oldest| (now.timestamp_millis() - oldest).max(0)),
        drift: counters.recorded(Counter::Drift),
        drift_checked_at: counters
            .recorded(Counter::DriftCheckedAtMs)
            .and_then(DateTime::from_timestamp_millis),
        queue: QueueCounts {
            waiting: queue.waiting,
            scheduled: queue.scheduled,
            dead: queue.dead,
        },
        computed_at: now,
    };
    state.stats.put(stats.clone());
    Ok(stats)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// The sale; without it, the current sale.
    pub sale_id: Option<Uuid>,
}

error_responses!(CurrentStatsErrors: [ADMIN] SaleNotFound, NoCurrentSale);

/// Stats of the current (or a given) sale (admin).
#[utoipa::path(get, path = "/api/flash-sale/stats", tag = "admin",
    security(("bearer" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "The sale's numbers", body = SaleStatsResponse),
        CurrentStatsErrors,
    ))]
async fn get_current_sale_stats(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(query): QueryParams<StatsQuery>,
) -> Result<Json<SaleStatsResponse>, ApiError> {
    let sale_id = state.sale_id_or_current(query.sale_id).await?;
    Ok(Json(stats_for(&state, sale_id).await?))
}

error_responses!(SaleStatsErrors: [ADMIN] SaleNotFound);

/// Stats of one sale (admin).
#[utoipa::path(get, path = "/api/admin/flash-sales/{id}/stats", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "The sale's numbers", body = SaleStatsResponse),
        SaleStatsErrors,
    ))]
async fn get_sale_stats(
    State(state): State<AppState>,
    _admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<SaleStatsResponse>, ApiError> {
    Ok(Json(stats_for(&state, id).await?))
}
